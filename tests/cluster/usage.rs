//! Usage history and retention on PostgreSQL, seen in the tables: pruning deletes exactly the
//! charges past the cut-off, in batches, with several nodes pruning at once; a real `pyexec
//! serve` prunes by itself, after its `--usage-retention-days`; upgrading a database counts its
//! earlier charges; and what counting charges per hour costs an admission (an ignored
//! benchmark).

use std::time::{Duration, Instant};

use pyexec::keys::{Caller, Env, KeyId, KeyStore, NewKey, PgOptions, StoreLocation};
use time::OffsetDateTime;

use crate::pg::{SHARED, psql};
use crate::server::Server;

const DAY: time::Duration = time::Duration::DAY;

async fn node(url: &str) -> KeyStore {
    let options = PgOptions::new(url).unwrap();
    KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
        .await
        .unwrap()
}

async fn caller(store: &KeyStore) -> Caller {
    let (key, _) = store
        .create(NewKey {
            name: "usage".into(),
            description: "retention test".into(),
            env: Env::Test,
            executions_limit: u64::MAX / 2,
            rate_limit_per_minute: u32::MAX,
            fuel_limit: None,
            max_sessions: None,
        })
        .await
        .unwrap();
    store.authenticate(key.expose_secret()).await.unwrap()
}

fn count(url: &str, sql: &str) -> u64 {
    psql(url, sql).parse().unwrap()
}

/// Charges made before the cut-off go, later ones stay; an hour goes once it ended before it.
#[tokio::test]
async fn pruning_deletes_exactly_the_charges_before_the_cutoff() {
    let url = SHARED.fresh_database();
    let store = node(&url).await;
    let caller = caller(&store).await;
    for _ in 0..3 {
        store.admit(&caller).await.unwrap();
    }
    let cutoff = OffsetDateTime::now_utc();
    for _ in 0..2 {
        store.admit(&caller).await.unwrap();
    }
    let hours_before = count(&url, "SELECT count(*) FROM pyexec_usage_hourly");
    assert_eq!(
        count(&url, "SELECT sum(executions) FROM pyexec_usage_hourly"),
        5
    );

    let pruned = store.prune_usage(cutoff + 30 * DAY).await.unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM pyexec_charges"), 2);
    let hours_pruned = hours_before - count(&url, "SELECT count(*) FROM pyexec_usage_hourly");
    assert_eq!(pruned, 3 + hours_pruned);

    store
        .prune_usage(OffsetDateTime::now_utc() + 31 * DAY)
        .await
        .unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM pyexec_charges"), 0);
    assert_eq!(count(&url, "SELECT count(*) FROM pyexec_usage_hourly"), 0);
}

/// Thousands of old charges (more than one batch), three nodes pruning at once: every old
/// row is deleted exactly once, nothing recent is, and admissions go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_pruning_at_once_delete_every_old_row_once() {
    const OLD: u64 = 12_000;
    let url = SHARED.fresh_database();
    let nodes = [node(&url).await, node(&url).await, node(&url).await];
    let caller = caller(&nodes[0]).await;
    let id = caller.record.id.as_str();
    psql(
        &url,
        &format!(
            "INSERT INTO pyexec_charges (execution_id, key_id, charged_at)
             SELECT 'old' || i, '{id}', now() - interval '40 days' - i * interval '1 second'
             FROM generate_series(1, {OLD}) i"
        ),
    );
    let old_hours = count(
        &url,
        "SELECT count(*) FROM pyexec_usage_hourly WHERE hour < now() - interval '39 days'",
    );
    assert_eq!(
        count(&url, "SELECT sum(executions) FROM pyexec_usage_hourly"),
        OLD,
        "the trigger counted the inserted charges"
    );

    let now = OffsetDateTime::now_utc();
    let admitting = {
        let (node, caller) = (nodes[1].clone(), caller.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                node.admit(&caller).await.unwrap();
            }
        })
    };
    let pruning: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move { node.prune_usage(now).await.unwrap() })
        })
        .collect();
    let mut pruned = 0;
    for prune in pruning {
        pruned += prune.await.unwrap();
    }
    admitting.await.unwrap();
    // A node that found the lock taken skipped its round: prune once more to finish.
    pruned += nodes[0].prune_usage(now).await.unwrap();

    assert_eq!(pruned, OLD + old_hours);
    assert_eq!(count(&url, "SELECT count(*) FROM pyexec_charges"), 50);
    assert_eq!(
        count(&url, "SELECT sum(executions) FROM pyexec_usage_hourly"),
        50
    );
}

/// `pyexec serve --usage-retention-days 2`, started on a database holding charges 1, 1.5, 3 and
/// 40 days old, deletes the two older than 2 days (the default 30 would keep the 3-day one)
/// and their hours by itself, with no request made, and keeps the rest.
#[tokio::test]
async fn serve_prunes_usage_past_its_retention_by_itself() {
    let url = SHARED.fresh_database();
    let caller = caller(&node(&url).await).await;
    let id = caller.record.id.as_str();
    psql(
        &url,
        &format!(
            "INSERT INTO pyexec_charges (execution_id, key_id, charged_at)
             SELECT 'aged' || hours, '{id}', now() - hours * interval '1 hour'
             FROM unnest(ARRAY[24, 36, 72, 960]) hours"
        ),
    );
    let charges = || count(&url, "SELECT count(*) FROM pyexec_charges");
    assert_eq!(charges(), 4);

    let _server = Server::start_with(
        &std::env::temp_dir(),
        &["--store", &url, "--usage-retention-days", "2"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while charges() != 2 {
        assert!(
            Instant::now() < deadline,
            "the server did not prune: {} charges left",
            charges()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(execution_id, ',' ORDER BY execution_id) FROM pyexec_charges"
        ),
        "aged24,aged36"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) || ' hours, ' || sum(executions) || ' executions' \
             FROM pyexec_usage_hourly"
        ),
        "2 hours, 2 executions"
    );
}

/// A database at schema version 1 with charges in it: migrating to version 2 counts them, so
/// the history starts complete.
#[tokio::test]
async fn upgrading_counts_the_charges_made_before() {
    let url = SHARED.fresh_database();
    let id = "sk_test_Upgrade1";
    psql(
        &url,
        &format!(
            "CREATE TABLE pyexec_schema_migrations (version integer PRIMARY KEY, name text NOT \
             NULL, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO pyexec_schema_migrations (version, name) VALUES (1, 'v1');
             {v1}
             INSERT INTO pyexec_keys (id, hash, name, description, env, created_at,
                 executions_limit, executions_used, rate_limit_per_minute)
             VALUES ('{id}', decode(repeat('00', 32), 'hex'), 'old', '', 'test', now(), 10, 4,
                 60);
             INSERT INTO pyexec_charges (execution_id, key_id, charged_at)
             SELECT 'before' || i, '{id}', now() - i * interval '1 hour'
             FROM generate_series(0, 3) i",
            v1 = include_str!("../../src/keys/postgres/migrations/0001_keys.sql"),
        ),
    );
    let store = node(&url).await;
    let history = store
        .usage_history(&KeyId::parse(id).unwrap(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let hourly: Vec<u64> = history.hourly.iter().map(|b| b.executions).collect();
    assert_eq!(hourly[20..], [1, 1, 1, 1]);
    assert_eq!(hourly.iter().sum::<u64>(), 4);
}

/// Admissions/s with and without the trigger that counts charges per hour, alternated in one
/// run (64 tasks × 200 admissions, one hot key and 64 keys):
/// `cargo test --release --test cluster bench_hourly_counting -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_hourly_counting() {
    const TASKS: usize = 64;
    const EACH: usize = 200;
    let url = SHARED.fresh_database();
    let store = node(&url).await;
    let mut callers = Vec::new();
    for _ in 0..TASKS {
        callers.push(caller(&store).await);
    }
    // Round 0 warms the pool and the tables up and is not reported.
    for round in 0..9 {
        let counting = round % 2 == 0;
        let toggle = if counting { "ENABLE" } else { "DISABLE" };
        psql(
            &url,
            &format!("ALTER TABLE pyexec_charges {toggle} TRIGGER pyexec_charges_counted"),
        );
        for keys in [1, TASKS] {
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| {
                    let (store, caller) = (store.clone(), callers[task % keys].clone());
                    tokio::spawn(async move {
                        for _ in 0..EACH {
                            store.admit(&caller).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let rate = (TASKS * EACH) as f64 / started.elapsed().as_secs_f64();
            if round > 0 {
                println!(
                    "counting per hour {counting:5}, {keys:2} key(s): {rate:6.0} admissions/s"
                );
            }
        }
    }
}
