//! Running the real `pyexec` binary against a temporary data directory, and an in-process
//! control server that holds the database lock exactly like `pyexec serve` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pyexec::keys::{SledStore, serve_control};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A temporary directory; the data directory is `<tmp>/data`.
pub struct TestDir {
    tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// `pyexec --data-dir <data> ARGS…`.
    pub fn pyexec(&self, args: &[&str]) -> Run {
        let data_dir = self.data_dir();
        let mut all = vec!["--data-dir", data_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        run(pyexec().args(all))
    }

    /// `pyexec keys add` with defaults; returns (plaintext key, key ID).
    pub fn add_key(&self, env: &str, limit: u64) -> (String, String) {
        let out = self
            .pyexec(&[
                "keys",
                "add",
                "--name",
                "ci",
                "--description",
                "nightly builds",
                "--env",
                env,
                "--executions-limit",
                &limit.to_string(),
                "--json",
            ])
            .success();
        let json = out.json();
        (
            json["key"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Opens the key store in this process (the CLI must not be running). Waits for the lock:
    /// a store this process just dropped releases it only when sled's flusher thread ends.
    pub fn store(&self) -> SledStore {
        SledStore::open_waiting(&self.data_dir(), std::time::Duration::from_secs(5)).unwrap()
    }
}

/// The compiled-module cache shared by every test binary, so the guest is compiled once.
pub fn module_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

/// The `pyexec` binary with a clean environment for the settings under test.
pub fn pyexec() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
    command.env_remove("PYEXEC_DATA_DIR");
    command
}

/// `pyexec SUBCOMMAND ARGS…` (sharing the compiled module), with `stdin` as its standard
/// input.
pub fn pyexec_with_input(subcommand: &str, args: &[&str], stdin: impl AsRef<[u8]>) -> Run {
    let mut child = pyexec()
        .arg(subcommand)
        .args(args)
        .arg("--module-cache-dir")
        .arg(module_cache_dir())
        .env_remove("PYEXEC_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The child may refuse before reading everything (input limit): a broken pipe is fine.
    let _ = input.write_all(stdin.as_ref());
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

pub fn run(command: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// The outcome of one `pyexec` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        assert_eq!(self.stderr, "", "no diagnostics on success");
        self
    }

    /// A failure with exit code 1, nothing on stdout and one `error: …` line on stderr.
    #[track_caller]
    pub fn failure(self) -> Run {
        assert_eq!(self.code, Some(1), "expected exit code 1: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout on failure");
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:#?}");
        self
    }

    /// Bad usage: exit code 2, nothing on stdout and one `error: …` line on stderr containing
    /// `expected`.
    #[track_caller]
    pub fn usage_error(self, expected: &str) -> Run {
        assert_eq!(self.code, Some(2), "expected exit code 2: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout on bad usage");
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:#?}");
        assert!(
            self.stderr.contains(expected),
            "{expected:?} not in {self:#?}"
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// The plaintext `env` key that `text` (`keys add` output, the first-run banner) shows.
#[track_caller]
pub fn shown_key(text: &str, env: &str) -> String {
    let prefix = format!("sk_{env}_");
    text.split_whitespace()
        .find(|word| word.starts_with(&prefix) && word.len() == 48)
        .unwrap_or_else(|| panic!("no {prefix} key in:\n{text}"))
        .to_owned()
}

/// Asserts `text` contains neither `key`, nor its secret part, nor its SHA-256.
#[track_caller]
pub fn assert_no_secret(text: &str, key: &str) {
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert!(!text.contains(key), "plaintext key in output:\n{text}");
    assert!(!text.contains(&key[16..]), "secret part in output:\n{text}");
    assert!(!text.contains(&hash), "key hash in output:\n{text}");
    assert!(
        !text.contains(&hash.to_uppercase()),
        "key hash in output:\n{text}"
    );
}

/// `serve_control` on a store opened in this process, like `pyexec serve` runs it.
pub struct ControlServer {
    pub store: SledStore,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(dir: &TestDir) -> ControlServer {
        let store = SledStore::open(&dir.data_dir()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async { store.bind_control_socket() }).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(serve_control(listener, store.clone(), async {
            let _ = stopped.await;
        }));
        ControlServer {
            store,
            rt,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving the socket but keeps the database open (and locked).
    pub fn stop_serving(&mut self) {
        if let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) {
            stop.send(()).unwrap();
            self.rt.block_on(task).unwrap();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_serving();
    }
}
