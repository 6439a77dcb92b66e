//! `/sessions` over real HTTP, on the RustPython runtime (tests/cpython has CPython's): state
//! kept across turns, `result` cleared, what closes a session and what does not, ownership,
//! caps, busy turns, deadlines on an injected clock, charging and the error shapes.

use std::sync::Arc;
use std::time::Duration;

use pyexec::clock::{ManualClock, SharedClock};
use pyexec::sandbox::SessionConfig;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json, sandbox_with_sessions, spawn_app, spawn_app_with};

/// Opens a session for `key`; returns its id.
async fn open(app: &TestApp, key: &str) -> String {
    let (status, body) = json(app.post("/sessions", key, "{}").await).await;
    assert_eq!(status, 201, "{body}");
    body["session_id"].as_str().unwrap().to_owned()
}

/// Runs `code` as a turn of session `id`; returns the status and reply.
async fn turn(app: &TestApp, key: &str, id: &str, code: &str) -> (u16, Value) {
    turn_with(app, key, id, json!({ "code": code })).await
}

async fn turn_with(app: &TestApp, key: &str, id: &str, body: Value) -> (u16, Value) {
    let path = format!("/sessions/{id}/execute");
    json(app.post(&path, key, &body.to_string()).await).await
}

/// The result of a turn that must succeed.
async fn result(app: &TestApp, key: &str, id: &str, code: &str) -> Value {
    let (status, reply) = turn(app, key, id, code).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["success"], true, "{code}: {reply}");
    assert_eq!(reply["session_closed"], false, "{reply}");
    reply["result"].clone()
}

fn expect_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (expected_status, Some(code)),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

/// A server whose sessions read `clock` and are bounded by `config`.
async fn app_with(config: SessionConfig) -> TestApp {
    spawn_app_with(sandbox_with_sessions(config), 32).await
}

#[tokio::test]
async fn state_lives_across_turns() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let id = open(&app, &key).await;
    assert!(id.starts_with("ses_"), "{id}");

    let setup = "import statistics\n\
                 total = 40\n\
                 def add(n):\n    global total\n    total += n\n    return total\n\
                 class Counter:\n    def __init__(self):\n        self.n = 0\n    def bump(self):\n        self.n += 1\n        return self.n\n\
                 counter = Counter()\n\
                 result = 'ready'";
    assert_eq!(result(&app, &key, &id, setup).await, "ready");
    assert_eq!(result(&app, &key, &id, "result = add(2)").await, 42);
    assert_eq!(
        result(
            &app,
            &key,
            &id,
            "counter.bump()\nresult = [counter.bump(), statistics.mean([total, 0])]"
        )
        .await,
        json!([2, 21])
    );
    // `result` is what this turn assigned: null when it assigned nothing.
    assert_eq!(result(&app, &key, &id, "x = 1").await, Value::Null);
    // What an earlier turn assigned to `result` is gone before the next turn starts.
    result(&app, &key, &id, "result = 'set'").await;
    assert_eq!(
        result(&app, &key, &id, "result = 'result' in globals()").await,
        false
    );
    // `data` is rebound each turn.
    let (_, reply) = turn_with(
        &app,
        &key,
        &id,
        json!({"code": "result = data", "data": {"a": 1}}),
    )
    .await;
    assert_eq!(reply["result"], json!({"a": 1}));
    let (_, reply) = turn_with(&app, &key, &id, json!({"code": "result = data"})).await;
    assert_eq!(reply["result"], Value::Null);
    // The reply is /execute's, plus the session.
    let (status, reply) = turn(&app, &key, &id, "print('hi')\nresult = __name__").await;
    assert_eq!(status, 200);
    assert_eq!(reply["result"], "__main__");
    assert_eq!(reply["stdout"], "hi\n");
    assert_eq!(reply["session_id"], id.as_str());
    assert_eq!(reply["runtime"], "rustpython");
    for field in ["executions_left", "fuel_used", "duration_ms", "stderr"] {
        assert!(reply.get(field).is_some(), "{field} missing: {reply}");
    }

    let (status, shown) = json(app.get(&format!("/sessions/{id}"), Some(&key)).await).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["turns"], 9);
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(usage["sessions"], json!({"open": 1, "limit": 4}), "{usage}");
    assert_eq!(shown["busy"], false);
    assert_eq!(shown["runtime"], "rustpython");
}

#[tokio::test]
async fn an_exception_keeps_the_session() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let id = open(&app, &key).await;
    result(&app, &key, &id, "kept = [1, 2]").await;
    for failing in [
        "kept.append(3)\n1 / 0",
        "def f(:\n    pass",
        "import sys\nsys.exit(3)",
        "result = {1}",
    ] {
        let (status, reply) = turn(&app, &key, &id, failing).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["success"], false, "{reply}");
        assert_eq!(reply["session_closed"], false, "{failing}: {reply}");
    }
    assert_eq!(
        result(&app, &key, &id, "result = kept").await,
        json!([1, 2, 3])
    );
}

#[tokio::test]
async fn a_limit_the_host_enforces_closes_the_session() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let cases = [
        ("while True:\n    pass", "fuel_exhausted"),
        ("import time\ntime.sleep(60)", "timeout"),
        (
            "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))",
            "memory_limit",
        ),
        (
            "import sys\nsys.setrecursionlimit(10**6)\nclass A:\n    def __repr__(self):\n        return repr(A())\nrepr(A())",
            "stack_overflow",
        ),
        ("while True:\n    print('x' * 99)", "output_limit"),
        ("import os\nos._exit(3)", "process_exit"),
    ];
    for (code, kind) in cases {
        let id = open(&app, &key).await;
        result(&app, &key, &id, "x = 1").await;
        let (status, reply) = turn(&app, &key, &id, code).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["error"]["kind"], kind, "{code}: {reply}");
        assert_eq!(reply["session_closed"], true, "{code}: {reply}");
        let (status, body) = turn(&app, &key, &id, "result = x").await;
        expect_error(status, &body, 404, "session_not_found");
        let (status, body) = json(app.get(&format!("/sessions/{id}"), Some(&key)).await).await;
        expect_error(status, &body, 404, "session_not_found");
    }
}

#[tokio::test]
async fn sessions_are_their_keys_alone_and_isolated_from_each_other() {
    let app = spawn_app().await;
    let (mine, theirs) = (app.roomy_key().await, app.roomy_key().await);
    let first = open(&app, &mine).await;
    let second = open(&app, &mine).await;
    result(&app, &mine, &first, "secret = 'first'").await;
    assert_eq!(
        result(&app, &mine, &second, "result = 'secret' in globals()").await,
        false
    );

    // Another key sees nothing of them: the same 404 as for an id that never existed.
    let (status, body) = turn(&app, &theirs, &first, "result = secret").await;
    expect_error(status, &body, 404, "session_not_found");
    let (status, body) = json(app.get(&format!("/sessions/{first}"), Some(&theirs)).await).await;
    expect_error(status, &body, 404, "session_not_found");
    let (status, body) = json(app.delete(&format!("/sessions/{first}"), &theirs).await).await;
    expect_error(status, &body, 404, "session_not_found");
    let (_, listed) = json(app.get("/sessions", Some(&theirs)).await).await;
    assert_eq!(listed["sessions"], json!([]));
    assert_eq!(
        result(&app, &mine, &first, "result = secret").await,
        "first"
    );

    let (status, listed) = json(app.get("/sessions", Some(&mine)).await).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [first.clone(), second.clone()]);

    // Deleted: gone for good, and no longer listed.
    let response = app.delete(&format!("/sessions/{first}"), &mine).await;
    assert_eq!(response.status(), 204);
    let (status, body) = turn(&app, &mine, &first, "result = secret").await;
    expect_error(status, &body, 404, "session_not_found");
    let (status, body) = json(app.delete(&format!("/sessions/{first}"), &mine).await).await;
    expect_error(status, &body, 404, "session_not_found");
    let (_, listed) = json(app.get("/sessions", Some(&mine)).await).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_turn_while_another_runs_is_refused_and_not_charged() {
    let app = spawn_app().await;
    let key = app.key(100, 1_000_000).await;
    let id = open(&app, &key).await;
    let body = json!({"code": "import time\ntime.sleep(0.5)\nresult = 'slept'"}).to_string();
    let slow = app.post_in_background(&format!("/sessions/{id}/execute"), &key, &body);
    // Busy from the moment the turn claimed the session.
    loop {
        let (_, shown) = json(app.get(&format!("/sessions/{id}"), Some(&key)).await).await;
        if shown["busy"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, busy) = turn(&app, &key, &id, "result = 1").await;
    expect_error(status, &busy, 409, "session_busy");
    let (status, slept) = json(slow.await.unwrap()).await;
    assert_eq!(
        (status, &slept["result"]),
        (200, &json!("slept")),
        "{slept}"
    );
    assert_eq!(slept["executions_left"], 99);
    // Opening was free, the refused turn too; the session is usable again.
    let (_, reply) = turn(&app, &key, &id, "result = 2").await;
    assert_eq!(
        (reply["result"].clone(), reply["executions_left"].clone()),
        (json!(2), json!(98))
    );
}

#[tokio::test]
async fn a_key_may_hold_only_so_many_sessions() {
    let app = app_with(SessionConfig {
        per_tenant: 2,
        ..SessionConfig::default()
    })
    .await;
    let (key, other) = (app.roomy_key().await, app.roomy_key().await);
    let first = open(&app, &key).await;
    open(&app, &key).await;
    let (status, body) = json(app.post("/sessions", &key, "").await).await;
    expect_error(status, &body, 429, "session_limit_exceeded");
    // Other keys are not affected; a deleted session frees its place.
    open(&app, &other).await;
    assert_eq!(
        app.delete(&format!("/sessions/{first}"), &key)
            .await
            .status(),
        204
    );
    open(&app, &key).await;
}

#[tokio::test]
async fn a_keys_own_cap_overrides_the_servers() {
    let app = spawn_app().await;
    let key_with_cap = async |max_sessions| {
        let new_key = pyexec::keys::NewKey {
            name: "capped".into(),
            description: String::new(),
            env: pyexec::keys::Env::Test,
            executions_limit: 100,
            rate_limit_per_minute: 1_000,
            fuel_limit: None,
            max_sessions: Some(max_sessions),
        };
        let (key, _) = app.keys.create(new_key).await.unwrap();
        key.expose_secret().to_owned()
    };
    let (capped, none) = (key_with_cap(1).await, key_with_cap(0).await);
    open(&app, &capped).await;
    let (status, body) = json(app.post("/sessions", &capped, "{}").await).await;
    expect_error(status, &body, 429, "session_limit_exceeded");
    assert!(
        body["detail"].as_str().unwrap().contains("at most 1 "),
        "{body}"
    );
    let (_, usage) = json(app.get("/usage", Some(&capped)).await).await;
    assert_eq!(usage["sessions"], json!({"open": 1, "limit": 1}), "{usage}");
    let (status, body) = json(app.post("/sessions", &none, "{}").await).await;
    expect_error(status, &body, 429, "session_limit_exceeded");
}

#[tokio::test]
async fn a_full_server_answers_overloaded() {
    let app = app_with(SessionConfig {
        max_open: 2,
        ..SessionConfig::default()
    })
    .await;
    let (one, two) = (app.roomy_key().await, app.roomy_key().await);
    open(&app, &one).await;
    open(&app, &two).await;
    let response = app.post("/sessions", &one, "{}").await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let (status, body) = json(response).await;
    expect_error(status, &body, 503, "overloaded");
}

#[tokio::test]
async fn idle_sessions_expire_and_no_session_outlives_its_lifetime() {
    let clock = Arc::new(ManualClock::default());
    let app = app_with(SessionConfig {
        idle_timeout: Duration::from_secs(300),
        lifetime: Duration::from_secs(3600),
        max_idle_timeout: Duration::from_secs(3600),
        clock: SharedClock(clock.clone()),
        ..SessionConfig::default()
    })
    .await;
    let key = app.roomy_key().await;
    let idle = open(&app, &key).await;
    let (status, short) = json(
        app.post("/sessions", &key, r#"{"idle_timeout_s": 60}"#)
            .await,
    )
    .await;
    assert_eq!(
        (status, short["idle_timeout_s"].as_u64()),
        (201, Some(60)),
        "{short}"
    );
    let short = short["session_id"].as_str().unwrap().to_owned();
    let (status, busy) = json(
        app.post("/sessions", &key, r#"{"idle_timeout_s": 999999}"#)
            .await,
    )
    .await;
    // Asking for more than the maximum gets the maximum.
    assert_eq!(
        (status, busy["idle_timeout_s"].as_u64()),
        (201, Some(3600)),
        "{busy}"
    );
    let busy = busy["session_id"].as_str().unwrap().to_owned();
    let stats = || app.state.sandbox.session_stats();

    clock.advance(Duration::from_secs(61));
    let (status, body) = json(app.get(&format!("/sessions/{short}"), Some(&key)).await).await;
    expect_error(status, &body, 404, "session_not_found");
    // A turn keeps a session alive past its idle timeout.
    for _ in 0..13 {
        clock.advance(Duration::from_secs(240));
        result(&app, &key, &busy, "x = 1").await;
    }
    let (status, body) = turn(&app, &key, &idle, "x = 1").await;
    expect_error(status, &body, 404, "session_not_found");
    assert_eq!(stats().expired_idle, 2);
    // 61 + 13 × 240 = 3181 s: the busy session has 419 s of its hour left, whatever it does.
    clock.advance(Duration::from_secs(240));
    result(&app, &key, &busy, "x = 2").await;
    clock.advance(Duration::from_secs(200));
    let (status, body) = turn(&app, &key, &busy, "x = 3").await;
    expect_error(status, &body, 404, "session_not_found");
    assert_eq!(stats().expired_lifetime, 1);
    assert_eq!(stats().open, 0);
}

#[tokio::test]
async fn expired_sessions_are_reclaimed_without_being_touched() {
    let clock = Arc::new(ManualClock::default());
    let app = app_with(SessionConfig {
        clock: SharedClock(clock.clone()),
        ..SessionConfig::default()
    })
    .await;
    let key = app.roomy_key().await;
    open(&app, &key).await;
    open(&app, &key).await;
    assert_eq!(app.state.sandbox.session_stats().open, 2);
    clock.advance(Duration::from_secs(301));
    // The reaper runs every 100 ms of real time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.state.sandbox.session_stats().open > 0 {
        assert!(std::time::Instant::now() < deadline, "not reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = (200, app.get("/metrics", None).await.text().await.unwrap());
    assert!(metrics.contains("pyexec_sessions_open 0"), "{metrics}");
    assert!(
        metrics.contains(r#"pyexec_sessions_closed_total{reason="idle"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn turns_are_charged_like_executions_and_opening_is_not() {
    let app = spawn_app().await;
    let key = app.key(2, 1_000_000).await;
    let id = open(&app, &key).await;
    open(&app, &key).await;
    let (_, reply) = turn(&app, &key, &id, "result = 1").await;
    assert_eq!(reply["executions_left"], 1);
    let response = app
        .post(
            &format!("/sessions/{id}/execute"),
            &key,
            r#"{"code": "result = 2"}"#,
        )
        .await;
    assert_eq!(response.headers()["x-executions-left"], "0");
    let (status, body) = turn(&app, &key, &id, "result = 3").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["detail"], "API executions limit exceeded");
    // The refused turn did not run and the session is still there.
    let (status, shown) = json(app.get(&format!("/sessions/{id}"), Some(&key)).await).await;
    assert_eq!((status, shown["turns"].as_u64()), (200, Some(2)), "{shown}");
}

#[tokio::test]
async fn bad_requests_get_the_documented_errors() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    for (body, field) in [
        (r#"{"idle_timeout_s": 0}"#, "idle_timeout_s"),
        (r#"{"idle_timeout_s": -5}"#, "idle_timeout_s"),
        (r#"{"idle_timeout_s": "soon"}"#, "idle_timeout_s"),
        (r#"{"runtime": "jython"}"#, "runtime"),
        (r#"{"runtime": 3}"#, "runtime"),
    ] {
        let (status, reply) = json(app.post("/sessions", &key, body).await).await;
        expect_error(status, &reply, 422, "invalid_request");
        assert_eq!(reply["field"], field, "{body}: {reply}");
    }
    let (status, reply) = json(app.post("/sessions", &key, "[1]").await).await;
    expect_error(status, &reply, 422, "invalid_request");
    let (status, reply) = json(app.post("/sessions", "sk_test_nope", "{}").await).await;
    expect_error(status, &reply, 401, "invalid_api_key");

    let id = open(&app, &key).await;
    for (body, field) in [
        (json!({}), "code"),
        (json!({"code": 1}), "code"),
        (json!({"code": "x = 1", "data": [1]}), "data"),
    ] {
        let (status, reply) = turn_with(&app, &key, &id, body.clone()).await;
        expect_error(status, &reply, 422, "invalid_request");
        assert_eq!(reply["field"], field, "{body}: {reply}");
    }
    // A refused turn leaves the session usable.
    assert_eq!(result(&app, &key, &id, "result = 5").await, 5);

    let (status, reply) = turn(&app, &key, "ses_nope", "x = 1").await;
    expect_error(status, &reply, 404, "session_not_found");
}

#[tokio::test]
async fn a_session_of_another_node_is_named_as_such() {
    let app = app_with(SessionConfig {
        node: "node-a".into(),
        ..SessionConfig::default()
    })
    .await;
    let key = app.roomy_key().await;
    let id = open(&app, &key).await;
    assert!(id.starts_with("ses_node-a_"), "{id}");
    let elsewhere = id.replace("ses_node-a_", "ses_node-b_");
    let (status, body) = turn(&app, &key, &elsewhere, "x = 1").await;
    expect_error(status, &body, 404, "session_not_found");
    assert!(
        body["detail"].as_str().unwrap().contains("\"node-b\""),
        "{body}"
    );
}

/// A caller that stops waiting while its session starts (a client gone) leaves an open, idle
/// session that expires like any other, not a place reserved for ever.
#[tokio::test]
async fn a_session_whose_opener_stopped_waiting_is_an_ordinary_idle_session() {
    let clock = Arc::new(ManualClock::default());
    let app = app_with(SessionConfig {
        clock: SharedClock(clock.clone()),
        ..SessionConfig::default()
    })
    .await;
    let sandbox = &app.state.sandbox;
    // Both workers busy for a second: the session's start waits in the queue, so the caller
    // surely gives up before it.
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                let sleep = pyexec::sandbox::Execution {
                    code: "import time\ntime.sleep(1)".into(),
                    data: None,
                    fuel: None,
                    tenant: None,
                    runtime: None,
                };
                sandbox.execute(sleep).await
            })
        })
        .collect();
    while sandbox.load().running < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let request = pyexec::sandbox::OpenSession {
        tenant: "gone".into(),
        ..Default::default()
    };
    let opening = sandbox.open_session(request);
    tokio::select! {
        biased;
        () = tokio::task::yield_now() => {}
        _ = opening => panic!("the session started before the caller gave up"),
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(&sandbox.sessions("gone")[..], [session] if !session.busy) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            sandbox.sessions("gone")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock.advance(Duration::from_secs(301));
    assert_eq!(sandbox.sessions("gone"), []);
    for sleeper in sleepers {
        assert!(sleeper.await.unwrap().unwrap().result.is_ok());
    }
}
