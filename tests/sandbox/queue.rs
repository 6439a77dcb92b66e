//! The bounded queue: executions beyond capacity are refused at once, and cancelled or
//! timed-out executions give their slot back.

use std::time::{Duration, Instant};

use pyexec::sandbox::{Execution, Limits, Rejected, Sandbox, SandboxConfig};

use super::{cache_dir, execution};

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
        ..SandboxConfig::default()
    })
    .unwrap()
}

fn sleeper() -> Execution {
    execution("import time\ntime.sleep(60)")
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
    let outcome = sandbox.execute(execution("result = 1")).await.unwrap();
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

#[tokio::test]
async fn waiting_executions_are_served_round_robin_per_tenant() {
    let sandbox = Sandbox::new(SandboxConfig {
        limits: Limits::default(),
        workers: 1,
        queue: 16,
        cache_dir: Some(cache_dir()),
        pooling: false,
        ..SandboxConfig::default()
    })
    .unwrap();
    let job = |tenant: &str, name: &str| Execution {
        tenant: Some(tenant.to_owned()),
        runtime: None,
        ..execution(format!("import time\ntime.sleep(0.2)\nresult = '{name}'"))
    };
    let finished = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // The hog queues five executions first; the other tenant's one comes after them.
    for (tenant, name) in [
        ("hog", "h1"),
        ("hog", "h2"),
        ("hog", "h3"),
        ("hog", "h4"),
        ("hog", "h5"),
        ("other", "o1"),
    ] {
        let (runner, finished, execution) = (sandbox.clone(), finished.clone(), job(tenant, name));
        tasks.push(tokio::spawn(async move {
            let outcome = runner.execute(execution).await.unwrap();
            let name: String = serde_json::from_str(outcome.result.unwrap().get()).unwrap();
            finished.lock().unwrap().push(name);
        }));
        // Queue them in this order.
        wait_until(|| sandbox.load().running + sandbox.load().queued == tasks.len()).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let finished = finished.lock().unwrap().clone();
    // h1 was already running; the other tenant's turn comes right after it, not after h5.
    assert_eq!(
        finished,
        ["h1", "h2", "o1", "h3", "h4", "h5"],
        "{finished:?}"
    );
}
