//! `pyexec serve` as a process: first run, `keys` commands against a running server, SIGTERM
//! and `kill -9`, settings refused before it starts.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::helpers::{TestDir, pyexec, run, shown_key};
use super::server::Server;

#[tokio::test]
async fn the_first_run_creates_one_key_and_prints_a_curl_that_works() {
    let dir = TestDir::new();
    let server = Server::start(&dir.data_dir());
    let key = shown_key(&server.banner, "test");
    assert!(
        server.banner.contains("shown only this once"),
        "{}",
        server.banner
    );
    // Run the curl command exactly as printed.
    let curl: String = server
        .banner
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("curl"))
        .take_while(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let output = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    let reply: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{curl}\n{}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(
        (
            &reply["success"],
            &reply["result"],
            &reply["executions_left"]
        ),
        (&json!(true), &json!(3.0), &json!(999))
    );
    assert_eq!(
        server.execute(&key, json!({"code": "result = 1"})).await.0,
        200
    );
    drop(server);

    // A second start finds the key and creates none.
    let server = Server::start(&dir.data_dir());
    assert!(!server.banner.contains("sk_test_"), "{}", server.banner);
    let listed = dir.pyexec(&["keys", "list", "--json"]).success().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["executions_used"], 2);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = TestDir::new();
    let _server = Server::start(&dir.data_dir());
    let second = pyexec()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.data_dir())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("locked by another process"), "{stderr}");
}

/// A usage retention of 0 days would delete every usage record as soon as it is made, so it
/// is bad usage, from the flag or the environment, like one past 100 years; nothing is
/// created.
#[test]
fn a_usage_retention_outside_1_to_36500_days_is_refused() {
    let dir = TestDir::new();
    let serve = || serve_without(&dir, "PYEXEC_USAGE_RETENTION_DAYS");
    let flag = |days| run(serve().args(["--usage-retention-days", days]));
    let env = |days| run(serve().env("PYEXEC_USAGE_RETENTION_DAYS", days));
    for (out, days) in [(flag("0"), "0"), (env("0"), "0"), (flag("36501"), "36501")] {
        assert_eq!(out.code, Some(2), "{out:#?}");
        let expected = format!(
            "error: invalid value '{days}' for '--usage-retention-days <DAYS>': {days} is not \
             in 1..=36500"
        );
        assert!(out.stderr.starts_with(&expected), "{out:#?}");
    }
    assert!(!dir.data_dir().exists());
}

/// `pyexec serve` on a free port and `dir`'s data directory, with `variable` unset (so that
/// only what a test gives counts).
fn serve_without(dir: &TestDir, variable: &str) -> Command {
    let mut command = pyexec();
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.data_dir())
        .env_remove(variable);
    command
}

/// A node name goes into session ids (`ses_<node>_…`), where a load balancer reads it, so
/// anything that could not be told apart from the id's other parts is bad usage.
#[test]
fn a_node_name_that_cannot_sit_in_a_session_id_is_refused() {
    let dir = TestDir::new();
    let serve = || serve_without(&dir, "PYEXEC_NODE_NAME");
    let too_long = "n".repeat(33);
    for name in ["node_a", "Node-A", "nöde", too_long.as_str()] {
        for out in [
            run(serve().args(["--node-name", name])),
            run(serve().env("PYEXEC_NODE_NAME", name)),
        ] {
            assert_eq!(out.code, Some(2), "{name:?}: {out:#?}");
            let expected = format!(
                "error: invalid value '{name}' for '--node-name <NAME>': must be 1 to 32 \
                 lowercase letters, digits and dashes"
            );
            assert!(out.stderr.starts_with(&expected), "{out:#?}");
        }
    }
    assert!(!dir.data_dir().exists());
}

#[tokio::test]
async fn keys_commands_take_effect_on_the_running_server() {
    let dir = TestDir::new();
    let server = Server::start(&dir.data_dir());
    let (key, id) = dir.add_key("prod", 1);
    let ok = json!({"code": "result = 1"});
    assert_eq!(server.execute(&key, ok.clone()).await.0, 200);
    let (status, body) = server.execute(&key, ok.clone()).await;
    assert_eq!(
        (status, &body["detail"]),
        (429, &json!("API executions limit exceeded"))
    );

    dir.pyexec(&["keys", "reset-executions", &id]).success();
    let (status, body) = server.execute(&key, ok.clone()).await;
    assert_eq!((status, &body["executions_left"]), (200, &json!(0)));

    dir.pyexec(&["keys", "update-limit", &key, "5"]).success();
    let (status, body) = server.execute(&key, ok.clone()).await;
    assert_eq!((status, &body["executions_left"]), (200, &json!(3)));

    dir.pyexec(&["keys", "revoke", &id]).success();
    let (status, body) = server.execute(&key, ok).await;
    assert_eq!((status, &body["code"]), (401, &json!("revoked_api_key")));
}

#[tokio::test]
async fn sigterm_lets_an_execution_in_flight_finish() {
    let dir = TestDir::new();
    let server = Server::start(&dir.data_dir());
    let key = shown_key(&server.banner, "test");
    let base = server.base.clone();
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/execute"))
            .header("X-API-Key", key)
            .json(&json!({"code": "import time\ntime.sleep(1)\nresult = 'finished'"}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let pid = server.pid();
    let base = server.base.clone();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], "finished");
    // Gone: nothing listens any more, and the count survived.
    assert!(
        reqwest::get(format!("{base}/health")).await.is_err(),
        "pid {pid} still serving"
    );
    let listed = dir.pyexec(&["keys", "list", "--json"]).success().json();
    assert_eq!(listed[0]["executions_used"], 1);
}

#[tokio::test]
async fn kill_9_forgets_no_acknowledged_execution() {
    let dir = TestDir::new();
    let server = Server::start(&dir.data_dir());
    let (key, id) = dir.add_key("test", 1_000_000);
    // Eight clients hammer the server; it is killed while they do.
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (base, key, acknowledged) = (server.base.clone(), key.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let sent = client
                    .post(format!("{base}/execute"))
                    .header("X-API-Key", &key)
                    .json(&json!({"code": "result = 1"}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => {
                        if response.bytes().await.is_ok() {
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || server.kill_9())
        .await
        .unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        acknowledged > 50,
        "the load ran ({acknowledged} acknowledged)"
    );

    let shown = dir
        .pyexec(&["keys", "show", &id, "--json"])
        .success()
        .json();
    let used = shown["executions_used"].as_u64().unwrap();
    assert!(
        used >= acknowledged,
        "used {used} < acknowledged {acknowledged}"
    );
    // At most the requests in flight at the kill were charged without an answer.
    assert!(
        used <= acknowledged + 8,
        "used {used}, acknowledged {acknowledged}"
    );
    // The database opens cleanly for a new server.
    let server = Server::start(&dir.data_dir());
    assert_eq!(
        server.execute(&key, json!({"code": "result = 2"})).await.0,
        200
    );
}

/// VmRSS of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib << 10
}

/// Compiles the guest (tens of seconds). `serve` compiles in a child `pyexec compile`; in its
/// own process, even with `malloc_trim`, it kept 199 MiB against 87 MiB after a warm start.
#[tokio::test]
async fn a_cold_start_keeps_no_more_memory_than_a_warm_one() {
    let dir = TestDir::new();
    let cache = dir.root().join("empty-module-cache");
    let mut resident = Vec::new();
    let mut key = None;
    for _start in ["cold", "warm"] {
        let server = Server::start_with_cache(&dir.data_dir(), &cache, &[]);
        let key: &str = key.get_or_insert_with(|| shown_key(&server.banner, "test"));
        for n in 0..20 {
            let body = json!({"code": "result = sum(data['x'])", "data": {"x": [n, 1]}});
            assert_eq!(server.execute(key, body).await.1["result"], json!(n + 1));
        }
        resident.push(resident_bytes(server.pid()));
    }
    let [cold, warm] = resident[..] else {
        unreachable!()
    };
    assert!(
        cold <= warm + (50 << 20),
        "resident after a cold start: {} MiB, after a warm one: {} MiB",
        cold >> 20,
        warm >> 20
    );
    // The child compiled into the cache, for the engine `serve` runs.
    let compile = pyexec()
        .arg("--data-dir")
        .arg(dir.data_dir())
        .arg("compile")
        .arg("--module-cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&compile.stdout);
    assert!(
        compile.status.success() && said.starts_with("The guest is already compiled"),
        "{said}"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

/// SIGTERM lets a session's running turn finish (it replies), then the server and its sessions
/// are gone.
#[tokio::test]
async fn sigterm_lets_a_session_turn_in_flight_finish() {
    let dir = TestDir::new();
    let server = Server::start(&dir.data_dir());
    let key = shown_key(&server.banner, "test");
    let (status, opened) = server.post("/sessions", &key, json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let path = format!(
        "/sessions/{}/execute",
        opened["session_id"].as_str().unwrap()
    );
    let (status, _) = server
        .post(&path, &key, json!({"code": "word = 'finished'"}))
        .await;
    assert_eq!(status, 200);
    let (base, turn_key, turn_path) = (server.base.clone(), key.clone(), path.clone());
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}{turn_path}"))
            .header("X-API-Key", turn_key)
            .json(&json!({"code": "import time\ntime.sleep(1)\nresult = word"}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], "finished", "{body}");
    let listed = dir.pyexec(&["keys", "list", "--json"]).success().json();
    assert_eq!(listed[0]["executions_used"], 2);
}

/// A session's memory is the server's while it lives and returned when it is deleted (with
/// the pooling allocator `serve` uses by default).
#[tokio::test]
async fn a_deleted_session_returns_its_memory() {
    const HELD: u64 = 192 << 20;
    let dir = TestDir::new();
    let server = Server::start_with(&dir.data_dir(), &["--memory-mib", "512"]);
    let key = shown_key(&server.banner, "test");
    let (_, opened) = server.post("/sessions", &key, json!({})).await;
    let id = opened["session_id"].as_str().unwrap().to_owned();
    let before = resident_bytes(server.pid());
    let code = format!("held = bytearray({HELD})\nheld[::4096] = b'x' * len(held[::4096])");
    let (status, reply) = server
        .post(
            &format!("/sessions/{id}/execute"),
            &key,
            json!({ "code": code }),
        )
        .await;
    assert_eq!((status, &reply["success"]), (200, &json!(true)), "{reply}");
    let holding = resident_bytes(server.pid());
    assert!(
        holding >= before + HELD * 3 / 4,
        "holding {} MiB, before {} MiB",
        holding >> 20,
        before >> 20
    );
    assert_eq!(server.delete(&format!("/sessions/{id}"), &key).await, 204);
    let released = resident_bytes(server.pid());
    assert!(
        released + HELD * 3 / 4 <= holding,
        "after delete {} MiB, holding {} MiB",
        released >> 20,
        holding >> 20
    );
}
