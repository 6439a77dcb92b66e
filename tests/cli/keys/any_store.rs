//! `pyexec keys …` against whichever store the parent module's `TestDir` names: the sled
//! data directory in the `cli` binary (no server running: the CLI opens the database
//! itself), PostgreSQL with `--store` in the `cluster` binary. Only behaviour every store
//! shares belongs here; sled's data directory and lock are tested in `keys.rs`.

use pyexec::keys::{AdmitError, AuthError, KeyId};

use super::{TestDir, assert_no_secret, shown_key};

fn id(s: &str) -> KeyId {
    KeyId::parse(s).unwrap()
}

/// `keys add` of a test key named `n` with this description and limit, then `more`.
pub(super) fn add_args<'a>(description: &'a str, limit: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let add = [
        "keys",
        "add",
        "--name",
        "n",
        "--description",
        description,
        "--env",
        "test",
        "--executions-limit",
        limit,
    ];
    [&add[..], more].concat()
}

#[test]
fn add_prints_the_key_once_and_list_and_show_never_do() {
    let dir = TestDir::new();
    let out = dir
        .pyexec(&[
            "keys",
            "add",
            "--name",
            "ci bot",
            "--description",
            "nightly",
            "--env",
            "prod",
            "--executions-limit",
            "10",
            "--rate-limit-per-minute",
            "30",
            "--fuel-limit",
            "5000",
        ])
        .success();
    let key = shown_key(&out.stdout, "prod");
    assert_eq!(out.stdout.matches(key.as_str()).count(), 1, "shown once");
    assert!(out.stdout.contains("shown only this once"));
    for field in ["ci bot", "nightly", "prod", "30 per minute", "5000"] {
        assert!(out.stdout.contains(field), "{field} in\n{}", out.stdout);
    }
    let key_id = &key[..16];

    let list = dir.pyexec(&["keys", "list"]).success();
    assert!(list.stdout.starts_with("ID "), "{}", list.stdout);
    assert!(list.stdout.contains(key_id));
    assert!(list.stdout.contains("active"));
    assert_no_secret(&list.stdout, &key);

    for reference in [key_id, key.as_str()] {
        let show = dir.pyexec(&["keys", "show", reference]).success();
        assert!(show.stdout.contains(key_id));
        assert!(
            show.stdout.contains("Executions left   10"),
            "{}",
            show.stdout
        );
        assert_no_secret(&show.stdout, &key);
    }

    let record = dir.store().authenticate(&key).unwrap();
    assert_eq!(record.id, id(key_id));
    assert_eq!(record.rate_limit_per_minute, 30);
    assert_eq!(record.fuel_limit, Some(5000));
}

#[test]
fn add_json_holds_the_key_and_list_json_and_show_json_never_do() {
    let dir = TestDir::new();
    let add = dir.pyexec(&add_args("", "3", &["--json"])).success();
    let created = add.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_test_") && key.len() == 48, "{key}");
    assert_eq!(created["id"], &key[..16]);
    assert_eq!(created["env"], "test");
    assert_eq!(created["executions_limit"], 3);
    assert_eq!(created["executions_used"], 0);
    assert_eq!(created["executions_left"], 3);
    assert_eq!(created["rate_limit_per_minute"], 60);
    assert_eq!(created["fuel_limit"], serde_json::Value::Null);
    assert_eq!(created["revoked"], false);
    assert!(created.get("hash").is_none());

    let (other_key, _) = dir.add_key("prod", 1);
    let list = dir.pyexec(&["keys", "list", "--json"]).success();
    let listed = list.json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], &key[..16], "oldest first");
    for entry in listed {
        assert!(entry.get("key").is_none() && entry.get("hash").is_none());
    }
    assert_no_secret(&list.stdout, &key);
    assert_no_secret(&list.stdout, &other_key);

    let show = dir.pyexec(&["keys", "show", &key, "--json"]).success();
    assert_eq!(show.json(), {
        let mut expected = created.clone();
        expected.as_object_mut().unwrap().remove("key");
        expected
    });
    assert_no_secret(&show.stdout, &key);
}

#[test]
fn list_of_no_keys() {
    let dir = TestDir::new();
    let out = dir.pyexec(&["keys", "list"]).success();
    assert!(out.stdout.contains("No API keys yet"), "{}", out.stdout);
    assert_eq!(
        dir.pyexec(&["keys", "list", "--json"]).success().json(),
        serde_json::json!([])
    );
}

#[test]
fn reset_executions_sets_used_to_zero() {
    let dir = TestDir::new();
    let (key, key_id) = dir.add_key("test", 2);
    let charge_all = || {
        let store = dir.store();
        store.admit(&id(&key_id)).unwrap();
        store.admit(&id(&key_id)).unwrap();
        assert!(matches!(
            store.admit(&id(&key_id)),
            Err(AdmitError::LimitExceeded)
        ));
        store.flush_blocking().unwrap();
    };
    charge_all();
    let out = dir.pyexec(&["keys", "reset-executions", &key_id]).success();
    assert!(out.stdout.contains("0 used, 2 left of 2"), "{}", out.stdout);

    charge_all();
    let out = dir
        .pyexec(&["keys", "reset-executions", &key, "--json"])
        .success();
    let json = out.json();
    assert_eq!(
        (
            json["executions_used"].as_u64(),
            json["executions_left"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_no_secret(&out.stdout, &key);
    assert_eq!(dir.store().admit(&id(&key_id)).unwrap(), 1);
}

#[test]
fn update_limit_sets_the_total_and_floors_what_is_left() {
    let dir = TestDir::new();
    let (key, key_id) = dir.add_key("test", 10);
    {
        let store = dir.store();
        for _ in 0..4 {
            store.admit(&id(&key_id)).unwrap();
        }
        store.flush_blocking().unwrap();
    }
    let out = dir
        .pyexec(&["keys", "update-limit", &key_id, "6"])
        .success();
    assert!(
        out.stdout.contains("to 6: 4 used, 2 left"),
        "{}",
        out.stdout
    );

    let out = dir
        .pyexec(&["keys", "update-limit", &key, "3", "--json"])
        .success();
    let json = out.json();
    assert_eq!(json["executions_limit"], 3);
    assert_eq!(json["executions_used"], 4);
    assert_eq!(json["executions_left"], 0);
    assert_no_secret(&out.stdout, &key);
    assert!(matches!(
        dir.store().admit(&id(&key_id)),
        Err(AdmitError::LimitExceeded)
    ));
}

#[test]
fn a_keys_session_cap_is_set_at_add_and_by_update_sessions() {
    let dir = TestDir::new();
    let out = dir
        .pyexec(&add_args(
            "capped",
            "10",
            &["--max-sessions", "2", "--json"],
        ))
        .success();
    assert_eq!(out.json()["max_sessions"], 2);
    let key_id = out.json()["id"].as_str().unwrap().to_owned();
    let out = dir.pyexec(&["keys", "show", &key_id]).success();
    assert!(out.stdout.contains("Max sessions"), "{}", out.stdout);

    let out = dir
        .pyexec(&["keys", "update-sessions", &key_id, "0"])
        .success();
    assert!(
        out.stdout.contains("may now have 0 session(s)"),
        "{}",
        out.stdout
    );
    let out = dir
        .pyexec(&["keys", "update-sessions", &key_id, "default", "--json"])
        .success();
    assert_eq!(out.json()["max_sessions"], serde_json::Value::Null);
    let out = dir.pyexec(&["keys", "show", &key_id, "--json"]).success();
    assert_eq!(out.json()["max_sessions"], serde_json::Value::Null);

    let out = dir.pyexec(&["keys", "update-sessions", &key_id, "many"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("neither a number of sessions nor `default`"),
        "{out:#?}"
    );
    let out = dir.pyexec(&["keys", "update-sessions", "sk_test_ZZZZZZZZ", "1"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
}

#[test]
fn revoke_stops_authentication() {
    let dir = TestDir::new();
    let (key, key_id) = dir.add_key("prod", 10);
    let (other, other_id) = dir.add_key("prod", 10);
    let out = dir.pyexec(&["keys", "revoke", &key_id]).success();
    assert!(
        out.stdout.starts_with(&format!("Revoked {key_id}")),
        "{}",
        out.stdout
    );

    let out = dir.pyexec(&["keys", "revoke", &other, "--json"]).success();
    let json = out.json();
    assert_eq!(json["revoked"], true);
    assert!(json["revoked_at"].is_string());
    assert_no_secret(&out.stdout, &other);

    // Idempotent: same revocation time.
    let again = dir
        .pyexec(&["keys", "revoke", &other_id, "--json"])
        .success();
    assert_eq!(again.json()["revoked_at"], json["revoked_at"]);

    let store = dir.store();
    assert!(matches!(store.authenticate(&key), Err(AuthError::Revoked)));
    assert!(matches!(
        store.authenticate(&other),
        Err(AuthError::Revoked)
    ));
    assert!(matches!(
        store.admit(&id(&key_id)),
        Err(AdmitError::Revoked)
    ));
    drop(store);
    let list = dir.pyexec(&["keys", "list"]).success();
    assert_eq!(
        list.stdout.matches("revoked 2").count(),
        2,
        "{}",
        list.stdout
    );
}

#[test]
fn unknown_keys_fail_every_command_with_a_message() {
    let dir = TestDir::new();
    let (key, _) = dir.add_key("test", 1);
    // A well-formed ID nobody has, and the right ID with a wrong secret.
    let unknown_id = "sk_test_ZZZZZZZZ";
    let wrong_secret = format!("{}{}", &key[..16], "Z".repeat(32));
    assert_ne!(wrong_secret, key);
    for reference in [unknown_id, wrong_secret.as_str()] {
        for json in [false, true] {
            for command in [
                vec!["keys", "show", reference],
                vec!["keys", "revoke", reference],
                vec!["keys", "reset-executions", reference],
                vec!["keys", "update-limit", reference, "5"],
            ] {
                let mut args = command.clone();
                if json {
                    args.push("--json");
                }
                let out = dir.pyexec(&args).failure();
                assert!(
                    out.stderr
                        .starts_with(&format!("error: unknown API key {}", &reference[..16])),
                    "{args:?}: {}",
                    out.stderr
                );
                assert!(!out.stderr.contains(&"Z".repeat(32)), "{}", out.stderr);
            }
        }
    }
    // Nothing changed.
    assert!(dir.store().authenticate(&key).is_ok());
}

#[test]
fn malformed_keys_are_rejected_without_echoing_them() {
    let dir = TestDir::new();
    let (key, _) = dir.add_key("test", 1);
    let typo = format!("{key}x");
    for reference in ["not-a-key", "sk_test_", typo.as_str()] {
        let out = dir.pyexec(&["keys", "show", reference]).failure();
        assert!(
            out.stderr.contains("is not an API key or key ID"),
            "{}",
            out.stderr
        );
        assert_no_secret(&out.stderr, &key);
    }
}

#[test]
fn invalid_add_arguments_are_rejected() {
    let dir = TestDir::new();
    let base = [
        "keys",
        "add",
        "--description",
        "d",
        "--env",
        "test",
        "--executions-limit",
        "1",
    ];
    let out = dir
        .pyexec(&[&base[..], &["--name", " "]].concat())
        .failure();
    assert_eq!(out.stderr, "error: invalid name: must not be empty\n");

    // Usage errors are clap's: exit code 2.
    for extra in [
        vec!["--name", "n", "--rate-limit-per-minute", "0"],
        vec!["--name", "n", "--fuel-limit", "0"],
        vec!["--name", "n", "--env", "staging"],
        vec!["--name", "n", "--executions-limit", "-1"],
        vec![],
    ] {
        let out = dir.pyexec(&[&base[..], &extra[..]].concat());
        assert_eq!(out.code, Some(2), "{extra:?}: {out:#?}");
        assert!(out.stderr.contains("error:"), "{out:#?}");
    }
    assert_eq!(
        dir.pyexec(&["keys", "list", "--json"]).success().json(),
        serde_json::json!([])
    );
}

#[test]
fn rate_limit_alias_from_the_prototype_is_accepted() {
    let dir = TestDir::new();
    let out = dir
        .pyexec(&add_args("d", "1", &["--rate-limit", "7", "--json"]))
        .success();
    assert_eq!(out.json()["rate_limit_per_minute"], 7);
}
