//! The PostgreSQL store's guarantees, with several store handles in one process standing in
//! for nodes (each has its own pool and its own admission batcher, as a node does).

use std::sync::Arc;
use std::time::Duration;

use pyexec::keys::{
    AdmitError, Caller, Env, KeyRef, KeyStore, NewKey, PgOptions, PgStore, StoreError,
    StoreLocation,
};

use crate::pg::{PgServer, SHARED, psql};

fn new_key(executions_limit: u64, rate_limit_per_minute: u32) -> NewKey {
    NewKey {
        name: "cluster".into(),
        description: "cluster test".into(),
        env: Env::Test,
        executions_limit,
        rate_limit_per_minute,
        fuel_limit: None,
        max_sessions: None,
    }
}

async fn node(url: &str) -> KeyStore {
    let options = PgOptions::new(url).unwrap();
    KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
        .await
        .unwrap()
}

/// A key created on `nodes[0]`: its plaintext, and it authenticated on every node.
async fn key_on(nodes: &[KeyStore], limit: u64, rate: u32) -> (String, Vec<Caller>) {
    let (key, _) = nodes[0].create(new_key(limit, rate)).await.unwrap();
    let mut callers = Vec::new();
    for node in nodes {
        callers.push(node.authenticate(key.expose_secret()).await.unwrap());
    }
    (key.expose_secret().to_owned(), callers)
}

/// 32 tasks over two nodes, each admitting until refused: exactly `limit` succeed, and the
/// charges ledger has exactly one row per admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_limit_is_admitted_across_two_nodes() {
    const LIMIT: u64 = 300;
    let url = SHARED.fresh_database();
    let nodes = [node(&url).await, node(&url).await];
    let (_, callers) = key_on(&nodes, LIMIT, 1_000_000).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (node, caller) = (nodes[i % 2].clone(), callers[i % 2].clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                loop {
                    match node.admit(&caller).await {
                        Ok(_) => admitted += 1,
                        Err(AdmitError::LimitExceeded) => return admitted,
                        Err(other) => panic!("unexpected refusal: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, LIMIT);
    let id = callers[0].record.id.as_str();
    assert_eq!(
        psql(
            &url,
            &format!("SELECT executions_used FROM pyexec_keys WHERE id = '{id}'")
        ),
        LIMIT.to_string()
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*) FROM pyexec_charges WHERE key_id = '{id}'")
        ),
        LIMIT.to_string()
    );
}

/// The rate limit is one budget for the whole cluster, on the database's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_is_exact_across_nodes() {
    let url = SHARED.fresh_database();
    let nodes = [node(&url).await, node(&url).await];
    let (secret, callers) = key_on(&nodes, 1_000, 20).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (node, caller) = (nodes[i % 2].clone(), callers[i % 2].clone());
            tokio::spawn(async move { node.admit(&caller).await })
        })
        .collect();
    let (mut admitted, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(AdmitError::RateLimited(status)) => {
                assert!(!status.allowed);
                assert_eq!(status.limit, 20);
                assert!(
                    status
                        .retry_after
                        .is_some_and(|t| t <= Duration::from_secs(3))
                );
                limited += 1;
            }
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!((admitted, limited), (20, 40));
    // Every node now sees the same empty budget.
    for node in &nodes {
        assert_eq!(node.authenticate(&secret).await.unwrap().rate.remaining, 0);
    }
}

/// An admin change made through any handle applies to the next admission on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_limit_changes_apply_at_once_on_every_node() {
    let url = SHARED.fresh_database();
    let nodes = [node(&url).await, node(&url).await];
    let (_, callers) = key_on(&nodes, 10, 1_000).await;
    let admin = PgStore::open(&PgOptions::new(&url).unwrap()).await.unwrap();
    assert_eq!(
        nodes[0].admit(&callers[0]).await.unwrap().executions_left,
        9
    );
    assert_eq!(
        nodes[1].admit(&callers[1]).await.unwrap().executions_left,
        8
    );
    let key = KeyRef::Id(callers[0].record.id.clone());

    admin.update_limit(&key, 1).await.unwrap();
    for (node, caller) in nodes.iter().zip(&callers) {
        assert!(matches!(
            node.admit(caller).await,
            Err(AdmitError::LimitExceeded)
        ));
    }
    admin.reset_executions(&key).await.unwrap();
    assert_eq!(
        nodes[1].admit(&callers[1]).await.unwrap().executions_left,
        0
    );
    admin.revoke(&key).await.unwrap();
    for (node, caller) in nodes.iter().zip(&callers) {
        assert!(matches!(node.admit(caller).await, Err(AdmitError::Revoked)));
    }
}

/// Admissions on two nodes racing limit raises made from a third handle (as `pyexec keys
/// update-limit` from another machine): no update and no admission is lost, none is charged
/// twice. (The sled store's race of the same kind is a unit test in `src/keys/tests.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admissions_and_concurrent_limit_updates_on_other_nodes_never_lose_writes() {
    let url = SHARED.fresh_database();
    let nodes = [node(&url).await, node(&url).await];
    let (_, callers) = key_on(&nodes, 20, 1_000_000).await;
    let admin = PgStore::open(&PgOptions::new(&url).unwrap()).await.unwrap();
    let updates_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admitters: Vec<_> = (0..16)
        .map(|i| {
            let (node, caller) = (nodes[i % 2].clone(), callers[i % 2].clone());
            let done = Arc::clone(&updates_done);
            tokio::spawn(async move {
                let mut admitted = 0u64;
                loop {
                    // Read the flag first so the final drain comes after the last update.
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    match node.admit(&caller).await {
                        Ok(_) => admitted += 1,
                        Err(AdmitError::LimitExceeded) if finished => return admitted,
                        Err(AdmitError::LimitExceeded) => tokio::task::yield_now().await,
                        Err(other) => panic!("unexpected refusal: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let key = KeyRef::Id(callers[0].record.id.clone());
    let mut limit = 20;
    for _ in 0..60 {
        limit += 5;
        assert_eq!(
            admin
                .update_limit(&key, limit)
                .await
                .unwrap()
                .executions_limit,
            limit
        );
    }
    updates_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut admitted = 0;
    for admitter in admitters {
        admitted += admitter.await.unwrap();
    }
    let after = admin.get(&key).await.unwrap();
    assert_eq!(after.executions_limit, limit, "no limit update was lost");
    assert_eq!(after.executions_used, limit, "no admission was lost");
    assert_eq!(admitted, limit, "none charged twice");
}

/// Three nodes migrating an empty database at once: the migration runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_run_once_when_three_nodes_start_together() {
    let url = SHARED.fresh_database();
    let options = Arc::new(PgOptions::new(&url).unwrap());
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let options = Arc::clone(&options);
            tokio::spawn(async move { PgStore::open_migrated(&options).await.unwrap().1 })
        })
        .collect();
    let latest = *migrations().last().unwrap();
    let mut applied = Vec::new();
    for open in opens {
        let report = open.await.unwrap();
        assert_eq!(report.version, latest);
        applied.extend(report.applied);
    }
    applied.sort_unstable();
    assert_eq!(applied, migrations());
    assert_eq!(
        psql(&url, "SELECT count(*) FROM pyexec_schema_migrations"),
        migrations().len().to_string()
    );
}

/// The versions of the migrations the binary ships (`NNNN_name.sql`), in order.
pub fn migrations() -> Vec<i32> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/keys/postgres/migrations");
    let mut versions: Vec<i32> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name[..4].parse().unwrap()
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// Nothing listening: opening fails at once with a message naming the database.
#[tokio::test]
async fn connection_refused_at_open_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = PgOptions::new(&format!("postgres://pyexec@127.0.0.1:{port}/db")).unwrap();
    match PgStore::open(&options).await {
        Err(error @ StoreError::Connect { .. }) => {
            let message = pyexec::error_chain(&error);
            assert!(
                message.contains(&format!(
                    "cannot connect to PostgreSQL at 127.0.0.1:{port}/db"
                )),
                "{message}"
            );
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

/// The database stops under a node: admissions fail as unavailable (and `unavailable()`
/// says so) instead of hanging or being charged; once it is back, the same handle works
/// again without being reopened, and nothing admitted before the crash was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_fails_admissions_and_the_node_recovers_by_itself() {
    let server = PgServer::start();
    let mut options = PgOptions::new(&server.url()).unwrap();
    options.connect_timeout = Duration::from_millis(500);
    options.statement_timeout = Duration::from_millis(1000);
    let node = KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
        .await
        .unwrap();
    let (_, callers) = key_on(std::slice::from_ref(&node), 100, 1_000_000).await;
    for _ in 0..5 {
        node.admit(&callers[0]).await.unwrap();
    }
    server.stop_immediately();
    for _ in 0..3 {
        assert!(matches!(
            node.admit(&callers[0]).await,
            Err(AdmitError::Store(_))
        ));
    }
    assert!(node.unavailable().await.is_some());
    server.run();
    let mut recovered = None;
    for _ in 0..50 {
        match node.admit(&callers[0]).await {
            Ok(admitted) => {
                recovered = Some(admitted);
                break;
            }
            Err(AdmitError::Store(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(recovered.expect("recovered").executions_left, 94);
    assert_eq!(node.unavailable().await, None);
}

/// Admissions per second against this binary's PostgreSQL, batched (group commit, the
/// default, with one or two batches committing at once) vs one statement per admission, for
/// one hot key and for 64 keys:
/// `cargo test --release --test cluster bench_admissions -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_admissions() {
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 100;
    let url = SHARED.fresh_database();
    for (mode, max_batch, in_flight) in [
        ("batched, 1 in flight", 1024, 1),
        ("batched, 2 in flight", 1024, 2),
        ("unbatched", 1, 16),
    ] {
        for key_count in [1, 64] {
            let mut options = PgOptions::new(&url).unwrap();
            options.max_batch = max_batch;
            options.batches_in_flight = in_flight;
            let store = KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
                .await
                .unwrap();
            let mut callers = Vec::new();
            for _ in 0..key_count {
                callers.extend(
                    key_on(std::slice::from_ref(&store), u64::MAX / 2, u32::MAX)
                        .await
                        .1,
                );
            }
            let started = std::time::Instant::now();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let (store, caller) = (store.clone(), callers[i % key_count].clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(PER_CLIENT);
                        for _ in 0..PER_CLIENT {
                            let one = std::time::Instant::now();
                            store.admit(&caller).await.unwrap();
                            latencies.push(one.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            let elapsed = started.elapsed();
            latencies.sort();
            let p = |q: f64| {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
            };
            println!(
                "{mode:20} {key_count:2} key(s): {:7.0} admissions/s, p50 {:?}, p99 {:?}",
                latencies.len() as f64 / elapsed.as_secs_f64(),
                p(0.5),
                p(0.99)
            );
        }
    }
}
