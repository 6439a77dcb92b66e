//! The deployment the README shows: two `pyexec serve` nodes on one PostgreSQL behind nginx,
//! started from the committed `deploy/nginx.conf` with only its addresses and port replaced.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pyexec::keys::{Env, KeyStore, NewKey, PgOptions, StoreLocation};
use serde_json::{Value, json};

use crate::pg::{SHARED, free_port};
use crate::server::Server;

/// nginx from Debian's package (`.ci/run` installs it).
fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("nginx is installed (apt-get install nginx; .ci/run does)")
}

/// nginx running `deploy/nginx.conf` in front of `nodes`, in the foreground, until dropped.
struct Balancer {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[&Server]) -> Balancer {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap();
        let example_nodes = ["10.0.0.11:8000", "10.0.0.12:8000"];
        assert_eq!(nodes.len(), example_nodes.len());
        let port = free_port();
        let mut config = shipped.replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        for (example, node) in example_nodes.iter().zip(nodes) {
            let address = node.base.strip_prefix("http://").unwrap();
            assert!(
                config.contains(example),
                "deploy/nginx.conf names {example}"
            );
            config = config.replace(example, address);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("error.log");
        let settings = format!(
            "daemon off; pid {}; error_log {} warn;",
            dir.path().join("nginx.pid").display(),
            log.display()
        );
        let child = Command::new(nginx_binary())
            .arg("-e")
            .arg(&log)
            .arg("-c")
            .arg(&path)
            .args(["-g", &settings])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let balancer = Balancer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        balancer
    }

    async fn execute(&self, key: &str, n: u64) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/execute", self.base))
            .header("X-API-Key", key)
            .json(&json!({"code": "result = data['n'] + 1", "data": {"n": n}}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

impl Drop for Balancer {
    /// SIGTERM, nginx's fast shutdown: the master stops its workers before it exits (SIGKILL
    /// would orphan them, holding the test's output open).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Executions a node has run, from its `/metrics`.
async fn executions_on(node: &Server) -> f64 {
    let text = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("pyexec_executions_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Through nginx, 8 clients run a key with limit 40 dry: both nodes serve, exactly 40 run, and
/// the refusal passes through unchanged. Then one node is killed: nginx moves every request to
/// the other, and none is lost or run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_behind_the_shipped_nginx_config_share_the_quota_and_survive_a_node() {
    const LIMIT: u64 = 40;
    let url = SHARED.fresh_database();
    let first = Server::start_with(&std::env::temp_dir(), &["--store", &url]);
    let second = Server::start_with(&std::env::temp_dir(), &["--store", &url]);
    let balancer = std::sync::Arc::new(Balancer::start(&[&first, &second]));
    let store = KeyStore::open(
        &StoreLocation::Postgres(Box::new(PgOptions::new(&url).unwrap())),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let new_key = |executions_limit| NewKey {
        name: "behind nginx".into(),
        description: String::new(),
        env: Env::Test,
        executions_limit,
        rate_limit_per_minute: 1_000_000,
        fuel_limit: None,
        max_sessions: None,
    };
    let (key, _) = store.create(new_key(LIMIT)).await.unwrap();
    let key = key.expose_secret().to_owned();

    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (balancer, key) = (balancer.clone(), key.clone());
            tokio::spawn(async move {
                let mut ran = 0;
                for n in 0.. {
                    match balancer.execute(&key, n).await {
                        (200, reply) => {
                            assert_eq!(reply["result"], json!(n + 1));
                            ran += 1;
                        }
                        (429, reply) if reply["code"] == "executions_limit_exceeded" => {
                            assert_eq!(reply["detail"], "API executions limit exceeded");
                            return ran;
                        }
                        other => panic!("client {client}: unexpected reply {other:?}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut ran = 0;
    for client in clients {
        ran += client.await.unwrap();
    }
    assert_eq!(ran, LIMIT);
    let served = [executions_on(&first).await, executions_on(&second).await];
    assert!(
        served.iter().all(|&n| n > 0.0) && served.iter().sum::<f64>() == LIMIT as f64,
        "executions per node: {served:?}"
    );

    first.kill_9();
    // nginx drops its kept-alive connections to the dead node when it sees them close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (key, _) = store.create(new_key(1_000)).await.unwrap();
    let key = key.expose_secret();
    for n in 0..20 {
        let (status, reply) = balancer.execute(key, n).await;
        assert_eq!((status, &reply["result"]), (200, &json!(n + 1)), "{reply}");
    }
    assert_eq!(executions_on(&second).await, served[1] + 20.0);
}

/// Through nginx, sessions opened on either node keep being served by the node that holds
/// them: the shipped config routes `/sessions/ses_<node>_…` by the node name in the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_nginx_config_routes_a_session_to_its_node() {
    let url = SHARED.fresh_database();
    let first = Server::start_with(
        &std::env::temp_dir(),
        &["--store", &url, "--node-name", "node-a"],
    );
    let second = Server::start_with(
        &std::env::temp_dir(),
        &["--store", &url, "--node-name", "node-b"],
    );
    let balancer = Balancer::start(&[&first, &second]);
    let store = KeyStore::open(
        &StoreLocation::Postgres(Box::new(PgOptions::new(&url).unwrap())),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let (key, _) = store
        .create(NewKey {
            name: "sessions behind nginx".into(),
            description: String::new(),
            env: Env::Test,
            executions_limit: 1_000,
            rate_limit_per_minute: 1_000_000,
            fuel_limit: None,
            max_sessions: None,
        })
        .await
        .unwrap();
    let key = key.expose_secret();
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = client.post(format!("{}{path}", balancer.base));
        async move {
            let response = request
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, opened) = post("/sessions".into(), json!({})).await;
        assert_eq!(status, 201, "{opened}");
        ids.push(opened["session_id"].as_str().unwrap().to_owned());
    }
    for node in ["ses_node-a_", "ses_node-b_"] {
        assert!(ids.iter().any(|id| id.starts_with(node)), "{ids:?}");
    }
    for turn in 0..5 {
        for id in &ids {
            let code = "n = globals().get('n', 0) + 1\nresult = n";
            let (status, reply) =
                post(format!("/sessions/{id}/execute"), json!({ "code": code })).await;
            assert_eq!(
                (status, &reply["result"]),
                (200, &json!(turn + 1)),
                "{id}: {reply}"
            );
        }
    }
    let (status, reply) = post(
        "/sessions/ses_node-z_0123456789abcdefghijklmn/execute".into(),
        json!({"code": "x = 1"}),
    )
    .await;
    assert_eq!(
        (status, &reply["code"]),
        (404, &json!("session_not_found")),
        "{reply}"
    );
    assert!(
        reply["detail"].as_str().unwrap().contains("\"node-z\""),
        "{reply}"
    );
}
