//! Real `pyexec serve` nodes sharing one PostgreSQL database, administered with the real CLI
//! from "another machine" (no data directory in common).

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::pg::{PgServer, SHARED, psql};
use crate::server::Server;

const OK_BODY: &str = r#"{"code": "result = 1"}"#;

fn pyexec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(args)
        .env("PYEXEC_LOG", "warn")
        .output()
        .unwrap()
}

/// `pyexec keys add` against `url`: the new key's plaintext.
fn add_key(url: &str, limit: u64, rate: u32) -> String {
    let out = pyexec(&[
        "keys",
        "add",
        "--store",
        url,
        "--name",
        "cluster",
        "--description",
        "cluster test",
        "--env",
        "test",
        "--executions-limit",
        &limit.to_string(),
        "--rate-limit-per-minute",
        &rate.to_string(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// `pyexec keys <command> --store url KEY [more]`, which must succeed.
fn keys_command(url: &str, command: &str, key: &str, more: &[&str]) {
    let mut args = vec!["keys", command, "--store", url, key];
    args.extend_from_slice(more);
    let out = pyexec(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node on `url`; with PostgreSQL it keeps nothing in its data directory.
fn node(url: &str) -> Server {
    Server::start_with(&std::env::temp_dir(), &["--store", url])
}

async fn code_of(server: &Server, key: &str) -> (u16, String) {
    let (status, body) = server
        .execute(key, serde_json::from_str(OK_BODY).unwrap())
        .await;
    let code = body["code"].as_str().unwrap_or("ok").to_owned();
    (status, code)
}

/// Three nodes start together on an empty database (the schema is created exactly once),
/// then 32 clients spread over them run a key with limit L dry: exactly L executions run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_share_one_schema_and_admit_exactly_the_limit() {
    const LIMIT: u64 = 150;
    let url = SHARED.fresh_database();
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || node(&url))
        })
        .collect();
    let nodes: Vec<Arc<Server>> = starting
        .into_iter()
        .map(|s| Arc::new(s.join().unwrap()))
        .collect();
    assert_eq!(
        psql(&url, "SELECT count(*) FROM pyexec_schema_migrations"),
        "1"
    );

    let key = add_key(&url, LIMIT, 1_000_000);
    let ran = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (server, key, ran) = (Arc::clone(&nodes[i % 3]), key.clone(), Arc::clone(&ran));
            tokio::spawn(async move {
                loop {
                    match code_of(&server, &key).await {
                        (200, _) => {
                            ran.fetch_add(1, Ordering::SeqCst);
                        }
                        (429, code) if code == "executions_limit_exceeded" => return,
                        (429, code) if code == "concurrency_limit_exceeded" => {}
                        other => panic!("unexpected reply {other:?}"),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), LIMIT);
    let id = &key[..16];
    assert_eq!(
        psql(
            &url,
            &format!("SELECT executions_used FROM pyexec_keys WHERE id = '{id}'")
        ),
        LIMIT.to_string()
    );
}

/// `pyexec keys update-limit`, `reset-executions` and `revoke`, run against the database
/// from elsewhere, apply to the very next request on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_apply_to_the_next_request_on_every_node() {
    let url = SHARED.fresh_database();
    let nodes = [node(&url), node(&url)];
    let key = add_key(&url, 10, 1_000);
    for server in &nodes {
        assert_eq!(code_of(server, &key).await.0, 200);
    }
    keys_command(&url, "update-limit", &key[..16], &["2"]);
    for server in &nodes {
        assert_eq!(
            code_of(server, &key).await,
            (429, "executions_limit_exceeded".into())
        );
    }
    keys_command(&url, "reset-executions", &key, &[]);
    for server in &nodes {
        assert_eq!(code_of(server, &key).await.0, 200);
    }
    keys_command(&url, "revoke", &key[..16], &[]);
    for server in &nodes {
        assert_eq!(code_of(server, &key).await, (401, "revoked_api_key".into()));
    }
    let list = pyexec(&["keys", "list", "--store", &url, "--json"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["executions_used"], json!(2));
    assert!(listed[0]["revoked_at"].is_string());
}

/// The database crashes (`pg_ctl stop -m immediate`) and comes back while clients hammer a
/// node: meanwhile the node answers 503 `storage_unavailable` with `Retry-After` and /health
/// says so; afterwards it serves again by itself; every acknowledged execution was counted
/// and the limit was never exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_crash_under_load_loses_nothing_and_over_admits_nothing() {
    const LIMIT: u64 = 400;
    let server = PgServer::start();
    let url = server.url();
    let node = Arc::new(Server::start_with(
        &std::env::temp_dir(),
        &[
            "--store",
            &url,
            "--store-connect-timeout-ms",
            "500",
            "--store-statement-timeout-ms",
            "1000",
        ],
    ));
    let key = add_key(&url, LIMIT, 1_000_000);
    let (acknowledged, unavailable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (node, key) = (Arc::clone(&node), key.clone());
            let (acknowledged, unavailable) = (Arc::clone(&acknowledged), Arc::clone(&unavailable));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let response = client
                        .post(format!("{}/execute", node.base))
                        .header("X-API-Key", &key)
                        .header("Content-Type", "application/json")
                        .body(OK_BODY)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().await.unwrap();
                    match (status, body["code"].as_str()) {
                        (200, _) => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        (503, Some("storage_unavailable")) => {
                            assert!(retry_after);
                            unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        (429, Some("executions_limit_exceeded")) => return,
                        other => panic!("unexpected reply {other:?}"),
                    }
                }
            })
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop_immediately();
    while unavailable.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = reqwest::get(format!("{}/health", node.base)).await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let during = acknowledged.load(Ordering::SeqCst);
    server.run();
    for client in clients {
        client.await.unwrap();
    }
    let health = reqwest::get(format!("{}/health", node.base)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(
        acknowledged > during,
        "no execution after the database came back"
    );
    let id = &key[..16];
    let used: u64 = psql(
        &url,
        &format!("SELECT executions_used FROM pyexec_keys WHERE id = '{id}'"),
    )
    .parse()
    .unwrap();
    let charged: u64 = psql(
        &url,
        &format!("SELECT count(*) FROM pyexec_charges WHERE key_id = '{id}'"),
    )
    .parse()
    .unwrap();
    // Nothing acknowledged was lost; at most the unknown-outcome batches were over-counted.
    assert!(
        acknowledged <= used,
        "{acknowledged} acknowledged, {used} counted"
    );
    assert_eq!(used, LIMIT);
    assert_eq!(charged, used);
}

/// Nothing listening at --store: `serve` exits non-zero at once with a message that says so.
#[test]
fn serve_without_a_reachable_database_exits_with_a_clear_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://pyexec@127.0.0.1:{port}/pyexec");
    let out = pyexec(&["serve", "--addr", "127.0.0.1:0", "--store", &url]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/pyexec"
        )),
        "{stderr}"
    );
    let out = pyexec(&["serve", "--store", "mysql://x"]);
    assert_eq!(out.status.code(), Some(2));
}
