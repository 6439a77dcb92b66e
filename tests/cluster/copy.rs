//! `pyexec store copy`: a sled data directory with keys in every state, moved into
//! PostgreSQL with the real CLI, then checked field by field and by authenticating the same
//! plaintext keys; a second copy refuses to overwrite unless told to.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use pyexec::keys::{AuthError, KeyId, KeyStore, PgOptions, SledStore, StoreLocation};
use serde_json::Value;

use crate::nodes::pyexec;
use crate::pg::SHARED;

fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `pyexec keys add` in the sled store of `data_dir` with these extra options: the key.
fn add_sled_key(data_dir: &Path, env: &str, limit: u64, more: &[&str]) -> String {
    let limit = limit.to_string();
    let mut args = vec![
        "keys",
        "add",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        "moving in",
        "--description",
        "copied from sled",
        "--env",
        env,
        "--executions-limit",
        &limit,
        "--json",
    ];
    args.extend_from_slice(more);
    let created: Value = serde_json::from_str(&succeeded(pyexec(&args))).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// `pyexec keys list --json` with these store options.
fn listed(store: &[&str]) -> Value {
    let args = [&["keys", "list", "--json"], store].concat();
    serde_json::from_str(&succeeded(pyexec(&args))).unwrap()
}

fn copy(from: &Path, to: &str, more: &[&str]) -> Output {
    let args = [
        &[
            "store",
            "copy",
            "--from",
            from.to_str().unwrap(),
            "--to",
            to,
        ],
        more,
    ]
    .concat();
    pyexec(&args)
}

/// Charges `count` executions of `key` in the sled store, durably.
fn charge_in_sled(data_dir: &Path, key: &str, count: usize) {
    let store = SledStore::open_waiting(data_dir, Duration::from_secs(5)).unwrap();
    for _ in 0..count {
        store.admit(&KeyId::parse(&key[..16]).unwrap()).unwrap();
    }
    store.flush_blocking().unwrap();
}

/// Keys with different limits, envs, rate limits and fuel overrides, some used, one used up
/// and one revoked, copied into an empty database: `keys list --json` shows every field
/// the same in both stores, and each plaintext key authenticates against PostgreSQL with
/// what it had left (the revoked one is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_every_key_intact_and_refuses_to_overwrite_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let sled = ["--data-dir", data_dir.to_str().unwrap()];
    let fresh = add_sled_key(&data_dir, "test", 10, &[]);
    let used = add_sled_key(
        &data_dir,
        "prod",
        1_000,
        &["--rate-limit-per-minute", "7", "--fuel-limit", "5000"],
    );
    let used_up = add_sled_key(&data_dir, "test", 3, &["--rate-limit-per-minute", "600"]);
    let revoked = add_sled_key(&data_dir, "prod", 50, &[]);
    charge_in_sled(&data_dir, &used, 42);
    charge_in_sled(&data_dir, &used_up, 3);
    charge_in_sled(&data_dir, &revoked, 5);
    succeeded(pyexec(&[
        "keys",
        "revoke",
        &revoked[..16],
        "--data-dir",
        sled[1],
    ]));
    let in_sled = listed(&sled);
    assert_eq!(in_sled.as_array().unwrap().len(), 4);

    let url = SHARED.fresh_database();
    let pg = ["--store", url.as_str()];
    let out = succeeded(copy(&data_dir, &url, &[]));
    assert!(out.starts_with("Copied 4 key(s) from "), "{out}");
    assert_eq!(listed(&pg), in_sled);

    let store = KeyStore::open(
        &StoreLocation::Postgres(Box::new(PgOptions::new(&url).unwrap())),
        Duration::ZERO,
    )
    .await
    .unwrap();
    for (key, left) in [(&fresh, 10), (&used, 958), (&used_up, 0)] {
        let caller = store.authenticate(key).await.unwrap();
        assert_eq!(caller.record.executions_left(), left, "{}", &key[..16]);
        assert_eq!(caller.rate.remaining, caller.record.rate_limit_per_minute);
    }
    let wrong_secret = format!("{}{}", &used[..16], "Z".repeat(32));
    assert!(matches!(
        store.authenticate(&wrong_secret).await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        store.authenticate(&revoked).await,
        Err(AuthError::Revoked)
    ));
    assert_eq!(
        store
            .admit(&store.authenticate(&used).await.unwrap())
            .await
            .unwrap()
            .executions_left,
        957
    );

    // Without --overwrite a second copy (now with a new key too) writes nothing at all.
    let added_later = add_sled_key(&data_dir, "test", 1, &[]);
    let before = listed(&pg);
    let out = copy(&data_dir, &url, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("already exist")
            && stderr.contains("nothing was copied")
            && stderr.contains(&fresh[..16])
            && !stderr.contains(&added_later[..16]),
        "{stderr}"
    );
    assert_eq!(listed(&pg), before);

    // With it, PostgreSQL holds exactly what sled holds again (the charge made there is
    // replaced by sled's count).
    let out = succeeded(copy(&data_dir, &url, &["--overwrite"]));
    assert!(out.starts_with("Copied 5 key(s) from "), "{out}");
    assert_eq!(listed(&pg), listed(&sled));
}

/// A --from that holds no key database is an error, not an empty copy (and is not created).
#[test]
fn store_copy_from_a_directory_without_keys_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let out = copy(&missing, &SHARED.url(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no key database"), "{stderr}");
    assert!(!missing.exists());
}
