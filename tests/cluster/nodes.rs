//! Real `pyexec serve` nodes sharing one PostgreSQL database, administered with the real CLI
//! from "another machine" (no data directory in common).

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::pg::{PgServer, SHARED, psql};
use crate::server::Server;
use crate::store::migrations;

const OK_BODY: &str = r#"{"code": "result = 1"}"#;

pub fn pyexec(args: &[&str]) -> Output {
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

/// The key's `executions_used` and its rows in the `pyexec_charges` ledger.
fn counted(url: &str, key: &str) -> (u64, u64) {
    let id = &key[..16];
    let number = |sql: String| psql(url, &sql).parse::<u64>().unwrap();
    (
        number(format!(
            "SELECT executions_used FROM pyexec_keys WHERE id = '{id}'"
        )),
        number(format!(
            "SELECT count(*) FROM pyexec_charges WHERE key_id = '{id}'"
        )),
    )
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
        migrations().len().to_string()
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
    let (used, charged) = counted(&url, &key);
    // Nothing acknowledged was lost; at most the unknown-outcome batches were over-counted.
    assert!(
        acknowledged <= used,
        "{acknowledged} acknowledged, {used} counted"
    );
    assert_eq!(used, LIMIT);
    assert_eq!(charged, used);
}

/// What a client saw of one request in [`a_node_killed_under_load_loses_no_acknowledged_execution`].
enum Seen {
    /// 200, with the key's `X-Executions-Left` after this execution.
    Ran {
        executions_left: u64,
    },
    Busy,
    Exhausted,
    /// No reply: the node is gone.
    NoReply,
}

async fn execute_once(client: &reqwest::Client, base: &str, key: &str) -> Seen {
    let sent = client
        .post(format!("{base}/execute"))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(OK_BODY)
        .send()
        .await;
    let Ok(response) = sent else {
        return Seen::NoReply;
    };
    let status = response.status().as_u16();
    let left = response
        .headers()
        .get("x-executions-left")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let Ok(body) = response.json::<Value>().await else {
        return Seen::NoReply;
    };
    match (status, body["code"].as_str()) {
        (200, _) => Seen::Ran {
            executions_left: left.expect("X-Executions-Left on a 200"),
        },
        (429, Some("concurrency_limit_exceeded")) => Seen::Busy,
        (429, Some("executions_limit_exceeded")) => Seen::Exhausted,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// `kill -9` of one of two nodes while 32 clients (16 on each) run a key with limit L: every
/// 200 any client received is counted in the database — each acknowledged execution's place
/// in the quota (`L − X-Executions-Left`) is distinct and within `executions_used`, and the
/// ledger has a row per counted execution — and the surviving node goes on serving until
/// exactly L were counted, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_no_acknowledged_execution() {
    const LIMIT: u64 = 600;
    const CLIENTS_PER_NODE: usize = 16;
    let url = SHARED.fresh_database();
    let (doomed, survivor) = (node(&url), node(&url));
    let key = add_key(&url, LIMIT, 1_000_000);
    // Each 200: whether the doomed node sent it, and its place in the quota.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<(bool, u64)>::new()));
    let clients: Vec<_> = [(&doomed, true), (&survivor, false)]
        .into_iter()
        .flat_map(|(server, is_doomed)| {
            std::iter::repeat_n((server.base.clone(), is_doomed), CLIENTS_PER_NODE)
        })
        .map(|(base, is_doomed)| {
            let (key, acknowledged) = (key.clone(), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    match execute_once(&client, &base, &key).await {
                        Seen::Ran { executions_left } => {
                            acknowledged
                                .lock()
                                .unwrap()
                                .push((is_doomed, LIMIT - executions_left));
                        }
                        Seen::Busy => {}
                        Seen::Exhausted => return false,
                        Seen::NoReply => return true,
                    }
                }
            })
        })
        .collect();
    // Kill it mid-load, just after it acknowledged an execution: the moment a reply sent
    // before its charge was durable would be lost.
    let just_acknowledged_by_the_doomed_node = || {
        let acknowledged = acknowledged.lock().unwrap();
        acknowledged.len() >= 150 && acknowledged.last().is_some_and(|(doomed, _)| *doomed)
    };
    while !just_acknowledged_by_the_doomed_node() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    doomed.kill_9();
    let mut lost_their_node = Vec::new();
    for client in clients {
        lost_their_node.push(client.await.unwrap());
    }
    // The dead node's clients were cut off; the survivor's ran until the quota was spent.
    assert_eq!(
        lost_their_node,
        [[true; CLIENTS_PER_NODE], [false; CLIENTS_PER_NODE]].concat()
    );

    let (used, charged) = counted(&url, &key);
    assert_eq!(
        used, LIMIT,
        "the survivor ran the key to its limit, no further"
    );
    assert_eq!(charged, used, "one ledger row per counted execution");
    let mut places: Vec<u64> = acknowledged.lock().unwrap().iter().map(|a| a.1).collect();
    let replies = places.len();
    places.sort_unstable();
    places.dedup();
    assert_eq!(
        places.len(),
        replies,
        "two replies were given the same place in the quota: one was forgotten"
    );
    assert!(
        places.iter().all(|&place| (1..=used).contains(&place)),
        "an acknowledged execution beyond the {used} counted"
    );
    // The rest of the quota went to executions the dead node admitted but never answered.
    assert!(replies as u64 <= used);
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
