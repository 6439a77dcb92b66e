//! `spawn_app()` and friends.

use std::sync::LazyLock;
use std::time::Duration;

use pyexec::api::{self, AppState};
use pyexec::keys::{Env, KeyStore, NewKey};
use pyexec::sandbox::{Limits, Sandbox, SandboxConfig, SessionConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The compiled-module cache shared by every test binary.
pub fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

pub fn test_limits() -> Limits {
    Limits {
        fuel: 2_000_000_000,
        timeout: Duration::from_secs(2),
        memory_bytes: 128 << 20,
        output_bytes: 64 << 10,
        input_bytes: 64 << 10,
    }
}

/// The sandbox the tests of one binary share: the guest is loaded once.
pub static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| sandbox_with(2, 64));

/// A sandbox of its own, for tests about capacity.
pub fn sandbox_with(workers: usize, queue: usize) -> Sandbox {
    sandbox_with_config(SandboxConfig {
        workers,
        queue,
        ..SandboxConfig::default()
    })
}

/// A sandbox of its own whose sessions are bounded by `sessions` (and its clock).
pub fn sandbox_with_sessions(sessions: SessionConfig) -> Sandbox {
    sandbox_with_config(SandboxConfig {
        workers: 2,
        sessions,
        ..SandboxConfig::default()
    })
}

/// `config` with the tests' limits and module cache, on-demand memory.
fn sandbox_with_config(config: SandboxConfig) -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits: test_limits(),
        cache_dir: Some(cache_dir()),
        pooling: false,
        ..config
    })
    .expect("the sandbox starts")
}

/// A running server and what the test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    pub keys: KeyStore,
    pub state: AppState,
    _data_dir: TempDir,
    _stop: oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SANDBOX.clone(), 32).await
}

pub async fn spawn_app_with(sandbox: Sandbox, per_key_concurrency: usize) -> TestApp {
    spawn_server(sandbox, per_key_concurrency, api::DEFAULT_MAX_CONNECTIONS).await
}

/// The server of [`spawn_app_with`], serving at most `max_connections` at once.
pub async fn spawn_server(
    sandbox: Sandbox,
    per_key_concurrency: usize,
    max_connections: usize,
) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let keys = crate::backend::key_store(data_dir.path()).await;
    let state = AppState::new(keys.clone(), sandbox, per_key_concurrency);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(api::serve(
        listener,
        state.clone(),
        max_connections,
        async {
            let _ = stopped.await;
        },
    ));
    TestApp {
        base,
        client: reqwest::Client::new(),
        keys,
        state,
        _data_dir: data_dir,
        _stop: stop,
    }
}

impl TestApp {
    /// A new key's plaintext.
    pub async fn key(&self, executions_limit: u64, rate_limit_per_minute: u32) -> String {
        let (key, _) = self
            .keys
            .create(NewKey {
                name: "test".into(),
                description: "integration test".into(),
                env: Env::Test,
                executions_limit,
                rate_limit_per_minute,
                fuel_limit: None,
                max_sessions: None,
            })
            .await
            .unwrap();
        key.expose_secret().to_owned()
    }

    /// A key that no test will exhaust.
    pub async fn roomy_key(&self) -> String {
        self.key(1_000_000, 1_000_000).await
    }

    /// `POST /execute` with a JSON body.
    pub async fn execute(&self, key: &str, body: &str) -> reqwest::Response {
        post_execute(&self.client, &self.base, key, body).await
    }

    /// `POST /execute` from a task of its own, for requests that must overlap.
    pub fn execute_in_background(
        &self,
        key: &str,
        body: &str,
    ) -> tokio::task::JoinHandle<reqwest::Response> {
        let (client, base, key, body) = (
            self.client.clone(),
            self.base.clone(),
            key.to_owned(),
            body.to_owned(),
        );
        tokio::spawn(async move { post_execute(&client, &base, &key, &body).await })
    }

    /// Waits until the sandbox has an execution running.
    pub async fn until_running(&self) {
        while self.state.sandbox.load().running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &str) -> reqwest::Response {
        post_json(&self.client, &self.base, path, key, body).await
    }

    /// `POST path` from a task of its own, for requests that must overlap.
    pub fn post_in_background(
        &self,
        path: &str,
        key: &str,
        body: &str,
    ) -> tokio::task::JoinHandle<reqwest::Response> {
        let (client, base, path, key, body) = (
            self.client.clone(),
            self.base.clone(),
            path.to_owned(),
            key.to_owned(),
            body.to_owned(),
        );
        tokio::spawn(async move { post_json(&client, &base, &path, &key, &body).await })
    }

    pub async fn delete(&self, path: &str, key: &str) -> reqwest::Response {
        let request = self.client.delete(format!("{}{path}", self.base));
        request.header("X-API-Key", key).send().await.unwrap()
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        request.send().await.unwrap()
    }
}

/// `POST /execute` with a JSON body, from any task.
pub async fn post_execute(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    post_json(client, base, "/execute", key, body).await
}

/// `POST path` with a JSON body, from any task.
async fn post_json(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Status and body of a response, the body parsed as JSON.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}
