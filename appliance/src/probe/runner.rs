//! When to probe: a config naming a probe this agent has not run hands it
//! to a task of its own (the reconciler never waits for it); the task
//! remembers the last probe id in the state folder, so a restarted agent
//! does not run a check twice, pings, and posts the report, retrying a few
//! times when the server is away.

use super::echo;
use crate::protocol::{ConnectivityProbe, DesiredConfig, ProbeReport};
use crate::sync::{ControlPlane, SyncError};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// Tries to deliver a report; the server's deadline is far shorter than
/// what more tries would take.
const REPORT_TRIES: u32 = 5;

/// The probe to run and the inside address to run it from.
type Job = (ConnectivityProbe, Ipv4Addr);

/// The reconciler's handle on the probe task.
pub struct Probes {
    offer: watch::Sender<Option<Job>>,
}

impl Probes {
    /// Starts the task for one credential; it ends when the handle is dropped.
    pub fn spawn(
        cp: Arc<ControlPlane>,
        credential: String,
        state_dir: PathBuf,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (offer, jobs) = watch::channel(None);
        let task = tokio::spawn(run(cp, credential, LastProbe::new(state_dir), jobs));
        (Probes { offer }, task)
    }

    /// Hands over the config's probe, if any; never waits. The task skips
    /// ids it has run already, so offering every config is fine.
    pub fn offer(&self, config: &DesiredConfig) {
        if let Some(p) = &config.probe {
            let already = self
                .offer
                .borrow()
                .as_ref()
                .is_some_and(|(q, _)| q.id == p.id);
            if !already {
                self.offer
                    .send_replace(Some((p.clone(), config.local_address)));
            }
        }
    }
}

async fn run(
    cp: Arc<ControlPlane>,
    credential: String,
    last: LastProbe,
    mut jobs: watch::Receiver<Option<Job>>,
) {
    let mut done = last.load();
    while jobs.changed().await.is_ok() {
        let Some((probe, source)) = jobs.borrow_and_update().clone() else {
            continue;
        };
        if done == Some(probe.id) {
            continue;
        }
        // Remembered before it runs: a crash mid-probe must not rerun it.
        done = Some(probe.id);
        if let Err(e) = last.save(probe.id) {
            tracing::warn!(probe_id = %probe.id, error = %e, "cannot remember the probe id; a restart may run it again");
        }
        let started = Instant::now();
        tracing::info!(
            probe_id = %probe.id,
            targets = probe.targets.len(),
            count = probe.count,
            interval_ms = probe.interval_ms,
            source = %source,
            "connectivity probe started"
        );
        let results = match echo::ping(source, &probe).await {
            Ok(r) => r,
            Err(e) => {
                // The server shows the site as not reporting.
                tracing::error!(probe_id = %probe.id, error = %e, "connectivity probe could not run");
                continue;
            }
        };
        let sent: u32 = results.iter().map(|r| u32::from(r.sent)).sum();
        let received: u32 = results.iter().map(|r| u32::from(r.received)).sum();
        let unreachable = results.iter().filter(|r| r.received == 0).count();
        tracing::info!(
            probe_id = %probe.id,
            targets = results.len(),
            sent,
            received,
            unreachable,
            ms = started.elapsed().as_millis() as u64,
            "connectivity probe finished"
        );
        let report = ProbeReport {
            probe_id: probe.id,
            results,
        };
        deliver(&cp, &credential, &report).await;
    }
}

async fn deliver(cp: &ControlPlane, credential: &str, report: &ProbeReport) {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=REPORT_TRIES {
        match cp.probe_report(credential, report).await {
            Ok(()) => {
                tracing::info!(probe_id = %report.probe_id, attempt, "probe report delivered");
                return;
            }
            Err(e) if e.is_permanent() || matches!(e, SyncError::Decode(_)) => {
                tracing::warn!(probe_id = %report.probe_id, error = %e, "probe report refused");
                return;
            }
            Err(e) if attempt < REPORT_TRIES => {
                tracing::warn!(probe_id = %report.probe_id, attempt, error = %e, wait_ms = wait.as_millis() as u64, "probe report not delivered; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
            Err(e) => {
                tracing::warn!(probe_id = %report.probe_id, error = %e, "probe report not delivered; giving up");
            }
        }
    }
}

/// The id of the last probe this appliance ran, in the state folder.
struct LastProbe {
    dir: PathBuf,
}

impl LastProbe {
    const FILE: &'static str = "last-probe";

    fn new(dir: PathBuf) -> Self {
        LastProbe { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(Self::FILE)
    }

    fn load(&self) -> Option<Uuid> {
        std::fs::read_to_string(self.path())
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    fn save(&self, id: Uuid) -> std::io::Result<()> {
        crate::state_file::write_atomically(&self.dir, Self::FILE, id.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_probe_id_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("vpcmesh-probe-{}", std::process::id()));
        let last = LastProbe::new(dir.clone());
        let _ = std::fs::remove_file(last.path());
        assert_eq!(last.load(), None);
        let id = Uuid::from_u128(0x1234);
        last.save(id).expect("saved");
        assert_eq!(LastProbe::new(dir.clone()).load(), Some(id));
        std::fs::write(last.path(), "garbage").expect("overwritten");
        assert_eq!(last.load(), None, "an unreadable file is no id");
        let _ = std::fs::remove_dir_all(dir);
    }
}
