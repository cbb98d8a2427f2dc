//! Time this host could not run: a thread that wakes every [`TICK`] and
//! counts any wake that came more than [`SLACK`] late. A machine that is
//! paused or starved (a virtual machine its hypervisor stops, a disk that
//! blocks every process for minutes) stops the guest and the host alike; a
//! deadline for the guest's answer counts only the time the host ran, so
//! such a pause is reported as a pause, not as a guest that stopped
//! answering. A guest that hangs while the host runs still misses its
//! deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(200);
/// A wake later than this counts as a stall (scheduling on a loaded
/// two-core machine is well below it).
const SLACK: Duration = Duration::from_secs(1);

static STALLED_MS: AtomicU64 = AtomicU64::new(0);
static WATCHING: Once = Once::new();

/// Starts the watch (once per process).
fn watch() {
    WATCHING.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("lab-stall-watch".into())
            .spawn(|| loop {
                let before = Instant::now();
                std::thread::sleep(TICK);
                let late = before.elapsed().saturating_sub(TICK);
                if late > SLACK {
                    STALLED_MS.fetch_add(late.as_millis() as u64, Ordering::Relaxed);
                    tracing::warn!(stalled = ?late, "lab: this host did not run for a while (paused or starved); deadlines for the guest do not count it");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "lab: cannot watch for host stalls");
        }
    });
}

/// All stalls seen since the watch began.
pub fn stalled() -> Duration {
    Duration::from_millis(STALLED_MS.load(Ordering::Relaxed))
}

/// A stopwatch that leaves out the host's stalls.
#[derive(Clone, Copy, Debug)]
pub struct RunningClock {
    started: Instant,
    stalled_before: Duration,
}

impl RunningClock {
    pub fn start() -> Self {
        watch();
        RunningClock {
            started: Instant::now(),
            stalled_before: stalled(),
        }
    }

    /// The host's stalls since the start.
    pub fn stalled(&self) -> Duration {
        stalled().saturating_sub(self.stalled_before)
    }

    /// Time since the start during which the host ran.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.stalled())
    }

    /// When `budget` of running time will have passed, as far as is known
    /// now (later, if the host stalls meanwhile).
    pub fn deadline(&self, budget: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + budget + self.stalled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pause test below stops the whole process: the tests here take
    /// turns, or one would see the other's pause.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_running_time_and_the_stalls_add_up_to_the_wall_clock() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let wall = Instant::now();
        let clock = RunningClock::start();
        std::thread::sleep(Duration::from_millis(300));
        let (elapsed, stalled) = (clock.elapsed(), clock.stalled());
        assert!(
            elapsed + stalled >= Duration::from_millis(300),
            "{elapsed:?} + {stalled:?}"
        );
        assert!(elapsed <= wall.elapsed(), "{elapsed:?}");
        assert!(clock.deadline(Duration::from_secs(5)) > tokio::time::Instant::now());
    }

    /// The process itself is stopped (SIGSTOP, as a paused machine
    /// stops it) for 2 s and continued by a child: the watch counts it,
    /// the running clock leaves it out, the deadline moves by it.
    #[test]
    fn a_pause_of_the_whole_process_is_left_out_of_the_running_time() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let clock = RunningClock::start();
        let budget = Duration::from_secs(30);
        let before = clock.deadline(budget);
        let pid = std::process::id();
        let mut waker = std::process::Command::new("sh")
            .args(["-c", &format!("sleep 2; kill -CONT {pid}")])
            .spawn()
            .expect("sh runs");
        // SAFETY: kill(2) on this process; the child above continues it.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        waker.wait().expect("the waker ran");
        // The watch thread notices on its next wake.
        let deadline = Instant::now() + Duration::from_secs(5);
        while clock.stalled() < Duration::from_millis(1500) {
            assert!(
                Instant::now() < deadline,
                "the 2 s pause was not seen: {:?}",
                clock.stalled()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stalled = clock.stalled();
        assert!(stalled < Duration::from_secs(3), "{stalled:?}");
        assert!(
            clock.elapsed() < Duration::from_secs(1),
            "{:?}",
            clock.elapsed()
        );
        assert!(clock.deadline(budget) >= before + Duration::from_millis(1500));
    }
}
