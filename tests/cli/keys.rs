//! `pyexec keys …` with no server running: the CLI opens the sled database itself. The
//! tests of what every store does are in `any_store` (the `cluster` binary re-runs them with
//! PostgreSQL); the data directory's own behaviour is tested here.

mod any_store;

use crate::helpers::{TestDir, assert_no_secret, pyexec, run, shown_key};

#[test]
fn data_dir_comes_from_the_option_before_or_after_the_subcommand_or_the_environment() {
    let dir = TestDir::new();
    let a = dir.root().join("a");
    let b = dir.root().join("b");
    let c = dir.root().join("c");
    let add = any_store::add_args("d", "1", &["--json"]);
    let before = run(pyexec().arg("--data-dir").arg(&a).args(&add)).success();
    let after = run(pyexec().args(&add).arg("--data-dir").arg(&b)).success();
    let from_env = run(pyexec().env("PYEXEC_DATA_DIR", &c).args(&add)).success();
    // The option wins over the environment.
    let overridden = run(pyexec()
        .env("PYEXEC_DATA_DIR", &c)
        .args(["keys", "list", "--json", "--data-dir"])
        .arg(&a))
    .success();
    let default = run(pyexec().current_dir(dir.root()).args(&add)).success();

    let ids = |dir: &std::path::Path| -> Vec<String> {
        let out = run(pyexec()
            .arg("keys")
            .arg("list")
            .arg("--json")
            .arg("--data-dir")
            .arg(dir))
        .success();
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id_of = |run: &crate::helpers::Run| run.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&a), vec![id_of(&before)]);
    assert_eq!(ids(&b), vec![id_of(&after)]);
    assert_eq!(ids(&c), vec![id_of(&from_env)]);
    assert_eq!(ids(&dir.root().join("data")), vec![id_of(&default)]);
    assert_eq!(overridden.json()[0]["id"], id_of(&before));
}

#[test]
fn data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    dir.pyexec(&["keys", "list"]).success();
    let mode = std::fs::metadata(dir.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn an_unusable_data_dir_is_reported() {
    let dir = TestDir::new();
    let file = dir.root().join("file");
    std::fs::write(&file, "").unwrap();
    let out = run(pyexec().args(["keys", "list", "--data-dir"]).arg(&file)).failure();
    assert!(
        out.stderr.contains("cannot open the key store in"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_locked_database_without_a_control_socket_is_reported() {
    let dir = TestDir::new();
    let _held = dir.store(); // holds the lock, serves no socket
    let out = dir.pyexec(&["keys", "list"]).failure();
    assert!(
        out.stderr.contains("in use by another process")
            && out.stderr.contains("control.sock is not reachable"),
        "{}",
        out.stderr
    );
}
