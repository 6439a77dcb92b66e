//! Choosing the runtime: `runtime` in `POST /execute`, and `GET /runtimes`.

use serde_json::json;

use super::helpers::{json, spawn_app};

#[tokio::test]
async fn without_a_runtime_the_default_runs_and_the_reply_names_it() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let (status, body) = json(app.execute(&key, r#"{"code": "result = 1"}"#).await).await;
    assert_eq!(
        (status, &body["result"], &body["runtime"]),
        (200, &json!(1), &json!("rustpython"))
    );
}

#[tokio::test]
async fn an_explicit_rustpython_runs_there() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let body =
        r#"{"code": "import sys; result = sys.implementation.name", "runtime": "rustpython"}"#;
    let (status, body) = json(app.execute(&key, body).await).await;
    assert_eq!(
        (status, &body["result"], &body["runtime"]),
        (200, &json!("rustpython"), &json!("rustpython"))
    );
}

#[tokio::test]
async fn an_unknown_runtime_is_refused_with_the_list_and_not_charged() {
    let app = spawn_app().await;
    let key = app.key(10, 60).await;
    let (status, body) = json(
        app.execute(&key, r#"{"code": "result = 1", "runtime": "cpython-9"}"#)
            .await,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_request");
    assert_eq!(body["field"], "runtime");
    assert_eq!(body["available"], json!(["rustpython"]));
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("cpython-9") && detail.contains("rustpython"),
        "{detail}"
    );
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(usage["executions_left"], 10, "{usage}");
}

#[tokio::test]
async fn a_runtime_that_is_not_a_string_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let key = app.key(10, 60).await;
    let (status, body) = json(
        app.execute(&key, r#"{"code": "result = 1", "runtime": 3}"#)
            .await,
    )
    .await;
    assert_eq!(
        (status, &body["code"], &body["field"]),
        (422, &json!("invalid_request"), &json!("runtime"))
    );
    assert!(body.get("available").is_none(), "{body}");
}

#[tokio::test]
async fn runtimes_are_listed_without_a_key() {
    let app = spawn_app().await;
    let (status, body) = json(app.get("/runtimes", None).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default"], "rustpython");
    let runtimes = body["runtimes"].as_array().unwrap();
    assert_eq!(runtimes.len(), 1);
    let rustpython = &runtimes[0];
    assert_eq!(rustpython["name"], "rustpython");
    assert!(
        rustpython["python_version"]
            .as_str()
            .unwrap()
            .starts_with("3.")
    );
    assert!(!rustpython["description"].as_str().unwrap().is_empty());
    let preloaded = rustpython["preloaded"].as_array().unwrap();
    assert!(preloaded.contains(&json!("json")) && preloaded.contains(&json!("math")));
    assert_eq!(rustpython["packages"], json!([]));
    let limits = app.state.sandbox.limits();
    assert_eq!(
        rustpython["limits"],
        json!({
            "fuel": limits.fuel,
            "timeout_ms": limits.timeout.as_millis() as u64,
            "memory_bytes": limits.memory_bytes,
            "output_bytes": limits.output_bytes,
            "input_bytes": limits.input_bytes,
        })
    );
}
