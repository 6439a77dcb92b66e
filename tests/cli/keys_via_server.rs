//! `pyexec keys …` while a server holds the database: the CLI must go through the control
//! socket, behave exactly as without a server, and take effect on the server at once.

use pyexec::keys::{AdmitError, AuthError, KeyId, SledStore, StoreError};

use crate::helpers::{ControlServer, TestDir, assert_no_secret, shown_key};

fn id(s: &str) -> KeyId {
    KeyId::parse(s).unwrap()
}

#[test]
fn every_command_goes_through_the_running_server_and_takes_effect_at_once() {
    let dir = TestDir::new();
    let server = ControlServer::start(&dir);
    let store = &server.store;
    // The CLI cannot open the database itself while the server holds it.
    assert!(matches!(
        SledStore::open(&dir.data_dir()),
        Err(StoreError::Locked { .. })
    ));

    // add (human and JSON): the server can authenticate the new keys immediately.
    let out = dir
        .pyexec(&[
            "keys",
            "add",
            "--name",
            "human",
            "--description",
            "d",
            "--env",
            "prod",
            "--executions-limit",
            "1",
        ])
        .success();
    let human_key = shown_key(&out.stdout, "prod");
    assert!(store.authenticate(&human_key).is_ok());
    let (key, key_id) = dir.add_key("test", 2);
    let record = store.authenticate(&key).unwrap();
    assert_eq!(record.id, id(&key_id));

    // list / show see what the server sees, including its live usage.
    store.admit(&record.id).unwrap();
    let list = dir.pyexec(&["keys", "list", "--json"]).success();
    assert_eq!(list.json()[1]["executions_used"], 1);
    assert_no_secret(&list.stdout, &key);
    let list = dir.pyexec(&["keys", "list"]).success();
    assert!(list.stdout.contains(&key_id) && list.stdout.contains(&human_key[..16]));
    assert_no_secret(&list.stdout, &key);
    assert_no_secret(&list.stdout, &human_key);
    for args in [
        vec!["keys", "show", &key],
        vec!["keys", "show", &key_id, "--json"],
    ] {
        let show = dir.pyexec(&args).success();
        assert!(show.stdout.contains(&key_id));
        assert_no_secret(&show.stdout, &key);
    }

    // reset-executions: a key at its limit is admitted again at once.
    store.admit(&record.id).unwrap();
    assert!(matches!(
        store.admit(&record.id),
        Err(AdmitError::LimitExceeded)
    ));
    let out = dir.pyexec(&["keys", "reset-executions", &key_id]).success();
    assert!(out.stdout.contains("0 used, 2 left of 2"), "{}", out.stdout);
    assert_eq!(store.admit(&record.id).unwrap(), 1);
    let out = dir
        .pyexec(&["keys", "reset-executions", &key, "--json"])
        .success();
    assert_eq!(out.json()["executions_used"], 0);
    assert_eq!(store.admit(&record.id).unwrap(), 1);

    // update-limit: the new total applies at once.
    let out = dir
        .pyexec(&["keys", "update-limit", &key_id, "1"])
        .success();
    assert!(
        out.stdout.contains("to 1: 1 used, 0 left"),
        "{}",
        out.stdout
    );
    assert!(matches!(
        store.admit(&record.id),
        Err(AdmitError::LimitExceeded)
    ));
    let out = dir
        .pyexec(&["keys", "update-limit", &key, "3", "--json"])
        .success();
    assert_eq!(out.json()["executions_left"], 2);
    assert_eq!(store.admit(&record.id).unwrap(), 1);

    // update-sessions: through the socket too.
    let out = dir
        .pyexec(&["keys", "update-sessions", &key_id, "2", "--json"])
        .success();
    assert_eq!(out.json()["max_sessions"], 2);

    // revoke: authentication and admission fail at once.
    let out = dir.pyexec(&["keys", "revoke", &key_id]).success();
    assert!(out.stdout.starts_with(&format!("Revoked {key_id}")));
    assert!(matches!(store.authenticate(&key), Err(AuthError::Revoked)));
    assert!(matches!(store.admit(&record.id), Err(AdmitError::Revoked)));
    let out = dir
        .pyexec(&["keys", "revoke", &human_key, "--json"])
        .success();
    assert_eq!(out.json()["revoked"], true);
    assert!(matches!(
        store.authenticate(&human_key),
        Err(AuthError::Revoked)
    ));

    // Errors come back the same way.
    let out = dir.pyexec(&["keys", "show", "sk_test_ZZZZZZZZ"]).failure();
    assert_eq!(out.stderr, "error: unknown API key sk_test_ZZZZZZZZ\n");
    let out = dir
        .pyexec(&[
            "keys",
            "add",
            "--name",
            "",
            "--description",
            "d",
            "--env",
            "test",
            "--executions-limit",
            "1",
        ])
        .failure();
    assert_eq!(out.stderr, "error: invalid name: must not be empty\n");
}

#[test]
fn the_cli_depends_on_the_socket_while_the_database_is_locked() {
    let dir = TestDir::new();
    let mut server = ControlServer::start(&dir);
    dir.pyexec(&["keys", "list"]).success();
    // Same lock, no socket: the CLI cannot work, so the success above used the socket.
    server.stop_serving();
    assert!(!dir.data_dir().join("control.sock").exists());
    let out = dir.pyexec(&["keys", "list"]).failure();
    assert!(
        out.stderr.contains("control.sock is not reachable"),
        "{}",
        out.stderr
    );
    drop(server);
    dir.pyexec(&["keys", "list"]).success();
}

#[test]
fn output_is_identical_with_and_without_a_server() {
    let dir = TestDir::new();
    let (key, key_id) = dir.add_key("test", 5);
    dir.add_key("prod", 7);
    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["keys", "show", &key_id],
        vec!["keys", "show", &key, "--json"],
        vec!["keys", "update-limit", &key_id, "9"],
        vec!["keys", "update-limit", &key, "9", "--json"],
        vec!["keys", "reset-executions", &key_id],
        vec!["keys", "reset-executions", &key_id, "--json"],
        vec!["keys", "revoke", &key_id],
        vec!["keys", "revoke", &key, "--json"],
        vec!["keys", "show", "sk_prod_ZZZZZZZZ"],
        vec!["keys", "update-limit", "sk_prod_ZZZZZZZZ", "1", "--json"],
    ];
    // The commands are idempotent as a sequence: after one pass the data reaches a fixed
    // point; then a direct pass and a pass through a server must print the same.
    for command in &commands {
        dir.pyexec(command);
    }
    let direct: Vec<_> = commands.iter().map(|c| dir.pyexec(c)).collect();
    let server = ControlServer::start(&dir);
    let via_server: Vec<_> = commands.iter().map(|c| dir.pyexec(c)).collect();
    drop(server);
    for ((command, d), s) in commands.iter().zip(&direct).zip(&via_server) {
        assert_eq!(
            (d.code, &d.stdout, &d.stderr),
            (s.code, &s.stdout, &s.stderr),
            "{command:?}"
        );
    }
    assert_eq!(direct.last().unwrap().code, Some(1));
}

#[test]
fn changes_made_through_the_server_are_on_disk() {
    let dir = TestDir::new();
    let (key, key_id) = dir.add_key("test", 5);
    {
        let server = ControlServer::start(&dir);
        server.store.admit(&id(&key_id)).unwrap();
        dir.pyexec(&["keys", "update-limit", &key_id, "8"])
            .success();
        dir.pyexec(&["keys", "revoke", &key]).success();
    }
    let store = dir.store();
    let record = store.get(&key_id.parse().unwrap()).unwrap();
    assert_eq!(record.executions_limit, 8);
    assert!(record.is_revoked());
}
