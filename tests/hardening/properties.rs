//! Property tests of the two decoding paths hostile input reaches first: request bodies (the
//! API's `ObjectBody` decoding) and JSON↔Python conversion in the guest.
//!
//! The fast tier runs a fixed number of cases from a fixed seed, so CI is reproducible; the long
//! tier (`scripts/long-tier.sh`) sets `PYEXEC_PROPTEST_CASES` and a random seed.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::helpers::{TestApp, spawn_app};

/// One server (and runtime) for all cases: building one per case would dominate the run.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    key: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    let key = runtime.block_on(app.roomy_key());
    Fixture { runtime, app, key }
});

fn runner(fast_tier_cases: u32) -> TestRunner {
    let cases = std::env::var("PYEXEC_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(fast_tier_cases);
    let seed = match std::env::var("PYEXEC_PROPTEST_SEED") {
        Ok(seed) => RngSeed::Fixed(seed.parse().expect("a u64 seed")),
        Err(_) => RngSeed::Fixed(0x7079_6578_6563),
    };
    TestRunner::new(Config {
        cases,
        rng_seed: seed,
        failure_persistence: None,
        ..Config::default()
    })
}

/// JSON values whose numbers `serde_json::Value` holds exactly (big ints have their own test).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn json_survives_a_round_trip_through_python() {
    let fixture = &*FIXTURE;
    let strategy = prop::collection::btree_map(".*", json_value(), 0..6)
        .prop_map(|map| Value::Object(map.into_iter().collect()));
    runner(96)
        .run(&strategy, |data| {
            let body = json!({"code": "result = data", "data": data}).to_string();
            let reply: Value = fixture.runtime.block_on(async {
                fixture
                    .app
                    .execute(&fixture.key, &body)
                    .await
                    .json()
                    .await
                    .unwrap()
            });
            prop_assert_eq!(&reply["result"], &data, "reply: {}", reply);
            Ok(())
        })
        .unwrap();
}

#[test]
fn big_integers_survive_a_round_trip_exactly() {
    let fixture = &*FIXTURE;
    let strategy = prop::collection::vec("-?[1-9][0-9]{0,80}", 1..6);
    runner(48)
        .run(&strategy, |numbers| {
            let list = numbers.join(",");
            let body = format!(r#"{{"code": "result = [data['n'], [str(n) for n in data['n']]]", "data": {{"n": [{list}]}}}}"#);
            let text = fixture.runtime.block_on(async {
                fixture.app.execute(&fixture.key, &body).await.text().await.unwrap()
            });
            let quoted: Vec<String> = numbers.iter().map(|n| format!("\"{n}\"")).collect();
            let expected = format!(r#""result":[[{list}],[{}]]"#, quoted.join(","));
            prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
            Ok(())
        })
        .unwrap();
}

/// Bodies: raw bytes, JSON of any shape, and objects with `code`/`data` of any type.
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), json_value())
            .prop_map(|(code, data)| json!({"code": code, "data": data}).to_string().into_bytes()),
        (".{0,40}", json_value()).prop_map(|(code, data)| {
            json!({"code": code, "data": {"d": data}})
                .to_string()
                .into_bytes()
        }),
    ]
}

#[test]
fn no_request_body_gets_a_5xx_or_a_reply_out_of_shape() {
    let fixture = &*FIXTURE;
    let app = pyexec::api::app(fixture.app.state.clone());
    runner(256)
        .run(&request_body(), |body| {
            let request = Request::post("/execute")
                .header("X-API-Key", &fixture.key)
                .header("Content-Type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let (status, reply) = fixture.runtime.block_on(async {
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, serde_json::from_slice::<Value>(&bytes))
            });
            prop_assert!(status < 500, "status {}", status);
            let reply = reply.expect("every reply is JSON");
            match status {
                200 => prop_assert!(reply["success"].is_boolean(), "{}", reply),
                _ => prop_assert!(
                    reply["detail"].is_string() && reply["code"].is_string(),
                    "{}",
                    reply
                ),
            }
            if status == 200 && reply["success"] == json!(false) {
                // Random code may fail any way but through the sandbox itself.
                prop_assert_ne!(&reply["error"]["kind"], &json!("internal"), "{}", reply);
            }
            Ok(())
        })
        .unwrap();
}
