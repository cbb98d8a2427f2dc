//! A frozen User-Mode Linux guest is told apart from a slow one, and only
//! a freeze gives a live-lab test its second try.

use super::{live_test_logged, LiveLab, GUEST_FROZE};
use crate::networks::World;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The guest is stopped as a frozen kernel would be (SIGSTOP on its host
/// process): its log falls silent, the host sees it stopped and burning
/// nothing, and a command gets no answer; continued, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_guest_reads_as_frozen_and_answers_again_once_continued() {
    let w = World::new().await;
    let lab = LiveLab::start(&w, "frozen", &["us-east-1"]).await;
    assert!(lab.sh("true").await.ok());
    let pid = lab.lab().guest_pid().expect("the guest runs") as i32;
    // SAFETY: kill(2) on the guest this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.lab().guest_silent_for().unwrap_or_default() < Duration::from_secs(12) {
        assert!(
            Instant::now() < deadline,
            "the stopped guest's log still moves: {:?}",
            lab.lab().guest_silent_for()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let view = lab.lab().guest_host_view().await;
    assert!(view.contains("cpu 0 ticks"), "{view}");
    assert!(view.contains(") T "), "the host sees it stopped: {view}");
    let asked = lab.lab().exec("true", Duration::from_secs(1)).await;
    assert!(asked.is_err(), "a stopped guest answered: {asked:?}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(lab.sh("true").await.ok());
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.lab().guest_silent_for().unwrap_or_default() > Duration::from_secs(6) {
        assert!(Instant::now() < deadline, "the heartbeat did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lab.stop().await;
}

/// Runs [`live_test_logged`] with a body that panics with `first`, then with
/// `second` (None: passes); returns whether it passed, how many tries, and
/// what it noted in its retry log (one of this call's own, not the suite's).
async fn tries_of(first: &'static str, second: Option<&'static str>) -> (bool, u32, String) {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "live-lab-retries-test-{}-{}.log",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&log);
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let noted = log.clone();
    let outcome = tokio::spawn(async move {
        let body = || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match (n, second) {
                    (0, _) => panic!("{first}"),
                    (_, Some(again)) => panic!("{again}"),
                    (_, None) => {}
                }
            }
        };
        live_test_logged("a test", body, &noted).await;
    })
    .await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (outcome.is_ok(), tries.load(Ordering::SeqCst), said)
}

#[tokio::test]
async fn only_a_frozen_guest_gives_a_test_a_second_try() {
    let froze =
        "the guest runs the script: no answer\nthe User-Mode Linux guest froze: silent for 40 s";
    assert!(froze.contains(GUEST_FROZE));
    let retried = format!("a test: {GUEST_FROZE} on the first try; ran it again in a new guest\n");
    assert_eq!(
        tries_of(froze, None).await,
        (true, 2, retried.clone()),
        "froze, then passed"
    );
    assert_eq!(
        tries_of(froze, Some(froze)).await,
        (false, 2, retried.clone()),
        "froze twice"
    );
    assert_eq!(
        tries_of(froze, Some("h1 never reached h2")).await,
        (false, 2, retried),
        "froze, then failed"
    );
    assert_eq!(
        tries_of("h1 never reached h2 within 180s", None).await,
        (false, 1, String::new()),
        "any other failure is not tried again"
    );
}
