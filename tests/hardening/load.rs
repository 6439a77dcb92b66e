//! Accounting and fairness under real concurrent HTTP load.

use std::time::{Duration, Instant};

use serde_json::json;

use super::helpers::{json, post_execute, sandbox_with, spawn_app, spawn_app_with};

#[tokio::test]
async fn exactly_the_limit_is_admitted_under_concurrent_load() {
    let app = spawn_app().await;
    let limit = 60;
    let key = app.key(limit, 1_000_000).await;
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (http, base, key) = (app.client.clone(), app.base.clone(), key.clone());
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..6 {
                let response = post_execute(&http, &base, &key, r#"{"code": "result = 1"}"#).await;
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count() as u64;
    let exhausted = statuses.iter().filter(|&&s| s == 429).count() as u64;
    assert_eq!(admitted, limit, "{statuses:?}");
    assert_eq!(admitted + exhausted, 32 * 6, "{statuses:?}");
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(
        (&usage["executions_used"], &usage["executions_left"]),
        (&json!(limit), &json!(0))
    );
    let stored = app.keys.get(&key.parse().unwrap()).await.unwrap();
    assert_eq!(stored.executions_used, limit);
}

#[tokio::test]
async fn cpu_hogs_do_not_starve_health_or_other_tenants() {
    // Two workers, a roomy queue and per-key cap: the hog can queue 16 endless loops.
    let app = spawn_app_with(sandbox_with(2, 32), 16).await;
    let hog = app.roomy_key().await;
    let hogs: Vec<_> = (0..16)
        .map(|_| app.execute_in_background(&hog, r#"{"code": "while True: pass"}"#))
        .collect();
    while app.state.sandbox.load().queued < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let (status, _) = json(app.get("/health", None).await).await;
    assert_eq!(status, 200);
    let health = started.elapsed();
    assert!(
        health < Duration::from_millis(500),
        "health took {health:?}"
    );

    // Another tenant waits for one running hog at most, not for the whole backlog.
    let other = app.roomy_key().await;
    let started = Instant::now();
    let (status, body) = json(
        app.execute(&other, r#"{"code": "result = 'served'"}"#)
            .await,
    )
    .await;
    let waited = started.elapsed();
    assert_eq!((status, &body["result"]), (200, &json!("served")));
    let backlog = app.state.sandbox.load().queued;
    assert!(
        backlog > 0,
        "the hogs were still queued when the other tenant was served"
    );
    for hog in hogs {
        assert_eq!(hog.await.unwrap().status(), 200);
    }
    eprintln!("health {health:?}, other tenant waited {waited:?}, hog backlog left {backlog}");
}

/// Long tier: memory stays flat over 10,000 executions.
#[tokio::test]
#[ignore = "long tier: scripts/long-tier.sh"]
async fn rss_stays_flat_over_ten_thousand_executions() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let run = |n: usize| {
        let (http, base, key) = (app.client.clone(), app.base.clone(), key.clone());
        async move {
            for _ in 0..n {
                let response = post_execute(&http, &base, &key, r#"{"code": "import json, statistics\nresult = statistics.mean(data['x'])", "data": {"x": [1, 2, 3]}}"#).await;
                assert_eq!(response.status(), 200);
            }
        }
    };
    let parallel = |n: usize| async move {
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(run(n / 4))).collect();
        for task in tasks {
            task.await.unwrap();
        }
    };
    parallel(1_000).await;
    let warm = rss_kib();
    parallel(10_000).await;
    let after = rss_kib();
    println!("RSS after 1,000 executions: {warm} KiB; after 10,000 more: {after} KiB");
    assert!(
        after < warm + 32 * 1024,
        "RSS grew from {warm} KiB to {after} KiB"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
