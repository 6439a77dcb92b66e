//! The bounded queue: executions beyond capacity are refused at once, and cancelled or
//! timed-out executions give their slot back.

use std::time::{Duration, Instant};

use pyexec::sandbox::{Execution, Limits, Rejected, Sandbox, SandboxConfig};

use super::cache_dir;

/// One worker and one queue slot: two executions at most.
fn tiny_sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits: Limits {
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        workers: 1,
        queue: 1,
        cache_dir: Some(cache_dir()),
        pooling: false,
    })
    .unwrap()
}

fn sleeper() -> Execution {
    Execution {
        code: "import time\ntime.sleep(60)".into(),
        data: None,
        fuel: None,
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn executions_beyond_capacity_are_rejected_immediately() {
    let sandbox = tiny_sandbox();
    let first = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.execute(sleeper()).await }
    });
    let second = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.execute(sleeper()).await }
    });
    wait_until(|| sandbox.load().running == 1 && sandbox.load().queued == 1).await;

    let started = Instant::now();
    let third = sandbox.execute(sleeper()).await;
    assert_eq!(third.unwrap_err(), Rejected::Overloaded { capacity: 2 });
    assert!(started.elapsed() < Duration::from_millis(100));

    // Both time out (2 s each, one after the other) and free their slots.
    assert!(first.await.unwrap().unwrap().result.is_err());
    assert!(second.await.unwrap().unwrap().result.is_err());
    let outcome = sandbox
        .execute(Execution {
            code: "result = 1".into(),
            data: None,
            fuel: None,
        })
        .await
        .unwrap();
    assert_eq!(outcome.result.unwrap().get(), "1");
    assert_eq!(sandbox.load().running + sandbox.load().queued, 0);
}

#[tokio::test]
async fn a_cancelled_execution_releases_its_slot() {
    let sandbox = tiny_sandbox();
    let running = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.execute(sleeper()).await }
    });
    wait_until(|| sandbox.load().running == 1).await;
    running.abort();
    // The worker notices within an epoch tick, long before the 2 s deadline.
    let started = Instant::now();
    wait_until(|| sandbox.load().running == 0 && sandbox.load().queued == 0).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
