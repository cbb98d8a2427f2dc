//! What a SIGTERM means for the site's pair. systemd sends it both when the
//! agent alone stops (`systemctl restart`, an upgrade) and when the
//! instance shuts down, and the two need opposite goodbyes:
//! - the agent alone: the kernel keeps forwarding on the last config, so an
//!   active member says "restarting" in its last beats and its partner
//!   holds off (`decide::RESTART_GRACE`); nothing moves, nothing is lost;
//! - a shutdown (or a state the agent cannot read): the kernel stops with
//!   the instance, so an active member hands the site to its partner first,
//!   as on a spot notice, within [`HANDOVER_WITHIN`].

use std::time::Duration;

/// How long an active member that shuts down waits for its partner to
/// take the site (systemd waits 90 s before it kills a stopping unit).
pub const HANDOVER_WITHIN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopping {
    /// Only the agent stops; the instance and its kernel run on.
    Restart,
    /// The instance is going down, or it could not be told.
    Shutdown,
}

impl Stopping {
    /// From `systemctl is-system-running`: `stopping` is a shutdown; the
    /// states of a running system are a restart; anything else (no
    /// systemd, an unknown state) is taken as a shutdown, whose handover
    /// is safe either way.
    pub fn from_system_state(state: &str) -> Stopping {
        match state.trim() {
            "running" | "degraded" | "maintenance" | "starting" | "initializing" => {
                Stopping::Restart
            }
            _ => Stopping::Shutdown,
        }
    }

    /// Asks systemd which it is (within 2 s).
    pub async fn detect() -> Stopping {
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::process::Command::new("systemctl")
                .arg("is-system-running")
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match asked {
            // It exits non-zero for states other than running; stdout names
            // the state either way.
            Ok(Ok(out)) => {
                let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let how = Stopping::from_system_state(&state);
                tracing::info!(system_state = %state, ?how, "stopping");
                how
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot ask systemd whether the instance shuts down; handing the site over");
                Stopping::Shutdown
            }
            Err(_) => {
                tracing::warn!("systemd did not say within 2 s whether the instance shuts down; handing the site over");
                Stopping::Shutdown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_system_means_the_agent_alone_restarts() {
        for s in [
            "running\n",
            "degraded",
            "maintenance",
            "starting",
            "initializing",
        ] {
            assert_eq!(Stopping::from_system_state(s), Stopping::Restart, "{s}");
        }
        for s in ["stopping\n", "offline", "unknown", "", "Running"] {
            assert_eq!(Stopping::from_system_state(s), Stopping::Shutdown, "{s}");
        }
    }
}
