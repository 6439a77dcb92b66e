//! `Server`: a real `pyexec serve` process on 127.0.0.1:0 for tests (shared by the `cli` and
//! `hardening` test binaries).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `pyexec serve` on 127.0.0.1:0.
pub struct Server {
    child: Child,
    pub base: String,
    /// What the server printed before it listened (the first-run banner, if any).
    pub banner: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts with the compiled-module cache every test binary shares.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// [`Server::start`] with more arguments for `serve` (e.g. `--store URL`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache");
        Server::start_with_cache(data_dir, &cache, extra)
    }

    /// Starts with `cache` as the compiled-module cache (an empty one compiles the guest).
    pub fn start_with_cache(data_dir: &Path, cache: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pyexec"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--timeout",
                "3",
                "--shutdown-grace",
                "10",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--module-cache-dir")
            .arg(cache)
            .args(extra)
            .env("PYEXEC_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "server exited: {banner}"
            );
            if let Some(url) = line.trim().strip_prefix("pyexec listening on ") {
                break url.to_owned();
            }
            banner.push_str(&line);
            assert!(Instant::now() < deadline, "server did not start");
        };
        Server {
            child,
            base,
            banner,
            _stdout: stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn execute(&self, key: &str, body: Value) -> (u16, Value) {
        self.post("/execute", key, body).await
    }

    /// `POST path` with a JSON body; the status and the reply.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `DELETE path`; the status.
    pub async fn delete(&self, path: &str, key: &str) -> u16 {
        let response = reqwest::Client::new()
            .delete(format!("{}{path}", self.base))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
