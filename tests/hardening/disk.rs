//! A read-only or full data directory: a clear error, a service that recovers, and no
//! acknowledged execution lost. The directories are real tmpfs mounts (size-limited, or
//! remounted read-only), which needs root; without it the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use super::server::Server;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipping: cannot mount a tmpfs here (the disk tests need root)");
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn pyexec(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("PYEXEC_LOG", "warn")
        .output()
        .unwrap()
}

fn add_key(data_dir: &Path) -> (String, String) {
    let output = pyexec(
        data_dir,
        &[
            "keys",
            "add",
            "--name",
            "disk",
            "--description",
            "disk test",
            "--env",
            "test",
            "--executions-limit",
            "1000000",
            "--rate-limit-per-minute",
            "1000000",
            "--json",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        added["key"].as_str().unwrap().to_owned(),
        added["id"].as_str().unwrap().to_owned(),
    )
}

fn executions_used(data_dir: &Path, id: &str) -> u64 {
    let output = pyexec(data_dir, &["keys", "show", id, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    shown["executions_used"].as_u64().unwrap()
}

#[test]
fn a_read_only_data_directory_is_a_clear_error() {
    let Some(disk) = Tmpfs::mount("16m") else {
        return;
    };
    let data_dir = disk.path.join("data");
    let (_, id) = add_key(&data_dir);
    let empty = disk.path.join("empty");
    disk.remount_read_only();

    for (dir, args) in [
        (&data_dir, vec!["serve", "--addr", "127.0.0.1:0"]),
        (&data_dir, vec!["keys", "list"]),
        (&empty, vec!["serve", "--addr", "127.0.0.1:0"]),
        (&empty, vec!["keys", "list"]),
    ] {
        let output = pyexec(dir, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Read-only file system"),
            "{args:?}: {stderr}"
        );
    }
    drop(disk);
    let _ = id;
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let Some(disk) = Tmpfs::mount("24m") else {
        return;
    };
    let data_dir = disk.path.join("data");
    let (key, id) = add_key(&data_dir);
    let server = Server::start(&data_dir);
    let ok = json!({"code": "result = 1"});
    let mut acknowledged = 0;
    for _ in 0..5 {
        assert_eq!(server.execute(&key, ok.clone()).await.0, 200);
        acknowledged += 1;
    }

    // Fill the disk to the last byte.
    let filler = disk.path.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .output();
    // sled writes into log segments it already allocated, so the failures start when it needs
    // a new one.
    let (mut sent, mut refused) = (0, 0);
    while refused < 5 {
        assert!(sent < 20_000, "a full disk never made a write fail");
        sent += 1;
        let (status, body) = server.execute(&key, ok.clone()).await;
        match status {
            200 => acknowledged += 1,
            503 => {
                assert_eq!(body["code"], "storage_unavailable", "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    // sled refuses every write after an I/O error: the instance reports itself unavailable so
    // that a supervisor restarts it, and it stays so even with space again.
    std::fs::remove_file(&filler).unwrap();
    let health = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["detail"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{health}"
    );
    eprintln!(
        "disk full: the first 503 after {} acknowledged requests",
        sent - refused
    );

    // Its final flush fails too: it stops, and says so with a non-zero status.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // After a restart the database opens cleanly, remembers every acknowledged execution, and
    // the service is healthy again.
    let used = executions_used(&data_dir, &id);
    assert!(
        used >= acknowledged,
        "used {used} < acknowledged {acknowledged}"
    );
    let server = Server::start(&data_dir);
    assert_eq!(server.execute(&key, ok).await.0, 200);
    let health = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
