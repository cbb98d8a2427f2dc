use crate::{aws::Aws, config::Settings};
use axum::extract::FromRef;
use leptos::prelude::LeptosOptions;
use leptos_axum::AxumRouteListing;
use sqlx::PgPool;
use std::sync::Arc;

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub leptos_options: LeptosOptions,
    pub routes: Arc<Vec<AxumRouteListing>>,
    pub aws: Aws,
    /// Wakes idle provisioning workers when a job starts or a phase ends.
    pub engine_wake: Arc<tokio::sync::Notify>,
    /// Network ids whose appliance configs may have changed (any replica).
    pub config_waiters: Arc<crate::appliances::Waiters>,
    /// Appliance credentials already looked up (dropped on every change).
    pub credentials: Arc<crate::appliances::CredentialCache>,
    /// Each network's compiled state, shared by its appliances' polls.
    pub snapshots: Arc<crate::appliances::Snapshots>,
    /// What each appliance and client address may ask of the appliance API.
    pub appliance_limits: Arc<crate::appliances::limits::Limits>,
    /// The agent binary appliances install; `None`: no appliance stack can
    /// be provisioned (see `--agent-binary`).
    pub agent: Option<crate::appliances::agent_binary::AgentRelease>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// The console's routes, generated once per process: they never change,
/// and generating them runs the app with resource loading suppressed for
/// the whole process (a process-wide flag in leptos_server): a page whose
/// resource first polls meanwhile, in another server of the same process
/// (the tests run many), would wait forever (leptos issue #4773).
fn route_list() -> Arc<Vec<AxumRouteListing>> {
    static ROUTES: std::sync::OnceLock<Arc<Vec<AxumRouteListing>>> = std::sync::OnceLock::new();
    ROUTES
        .get_or_init(|| Arc::new(leptos_axum::generate_route_list(app::App)))
        .clone()
}

impl AppState {
    pub fn new(pool: PgPool, settings: Settings, leptos_options: LeptosOptions, aws: Aws) -> Self {
        let routes = route_list();
        let credentials = Arc::new(crate::appliances::CredentialCache::default());
        let snapshots = Arc::new(crate::appliances::Snapshots::default());
        let config_waiters = Arc::new(crate::appliances::Waiters::default());
        crate::appliances::listen_for_changes(pool.clone(), {
            let (credentials, snapshots, waiters) = (
                credentials.clone(),
                snapshots.clone(),
                config_waiters.clone(),
            );
            // The caches drop what the change made stale before anyone wakes.
            move |change| {
                credentials.forget(change);
                snapshots.forget(change);
                waiters.wake(change);
            }
        });
        crate::appliances::rotation::spawn_sweeper(pool.clone(), settings.rotation_grace);
        let appliance_limits = crate::appliances::limits::Limits::new(settings.appliance_limits);
        AppState {
            pool,
            settings: Arc::new(settings),
            leptos_options,
            routes,
            aws,
            engine_wake: Arc::new(tokio::sync::Notify::new()),
            config_waiters,
            credentials,
            snapshots,
            appliance_limits,
            agent: None,
        }
    }

    /// The state handing out (and pinning in stacks) this agent binary.
    pub fn with_agent(
        mut self,
        agent: Option<crate::appliances::agent_binary::AgentRelease>,
    ) -> Self {
        self.agent = agent;
        self
    }
}
