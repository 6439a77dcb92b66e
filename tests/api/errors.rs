//! Every error status, in the `{"detail", "code"}` shape, and what is (not) charged.

use serde_json::json;

use super::helpers::{header, json, sandbox_with, spawn_app, spawn_app_with};

const OK_BODY: &str = r#"{"code": "result = 1"}"#;
const SLEEP_BODY: &str = r#"{"code": "import time\ntime.sleep(1)\nresult = 1"}"#;

#[tokio::test]
async fn missing_invalid_and_revoked_keys_are_401() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/execute", app.base))
        .header("Content-Type", "application/json")
        .body(OK_BODY)
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!((status, &body["code"]), (401, &json!("missing_api_key")));

    for bad in [
        "nope",
        "sk_test_",
        "sk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "sk_live_x",
    ] {
        let (status, body) = json(app.execute(bad, OK_BODY).await).await;
        assert_eq!(
            (status, &body["detail"], &body["code"]),
            (401, &json!("Invalid API key"), &json!("invalid_api_key")),
            "{bad}"
        );
    }

    let key = app.key(10, 60).await;
    let id = key[..16].parse().unwrap();
    app.keys.revoke(&id).await.unwrap();
    let response = app.execute(&key, OK_BODY).await;
    assert!(
        header(&response, "ratelimit-limit").is_none(),
        "no quota headers before authentication"
    );
    let (status, body) = json(response).await;
    assert_eq!((status, &body["code"]), (401, &json!("revoked_api_key")));
}

#[tokio::test]
async fn exhausted_executions_are_429_with_the_prototype_detail() {
    let app = spawn_app().await;
    let key = app.key(2, 60).await;
    for left in [1, 0] {
        let (status, body) = json(app.execute(&key, OK_BODY).await).await;
        assert_eq!((status, &body["executions_left"]), (200, &json!(left)));
    }
    let response = app.execute(&key, OK_BODY).await;
    assert_eq!(header(&response, "x-executions-left"), Some("0"));
    let (status, body) = json(response).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"detail": "API executions limit exceeded", "code": "executions_limit_exceeded"})
    );
}

#[tokio::test]
async fn the_rate_limit_is_429_with_retry_after_and_not_charged() {
    let app = spawn_app().await;
    let key = app.key(100, 2).await;
    for _ in 0..2 {
        assert_eq!(app.execute(&key, OK_BODY).await.status(), 200);
    }
    let response = app.execute(&key, OK_BODY).await;
    let retry_after: u64 = header(&response, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&response, "ratelimit-remaining"), Some("0"));
    assert_eq!(header(&response, "x-executions-left"), Some("98"));
    let (status, body) = json(response).await;
    assert_eq!(
        (status, &body["detail"], &body["code"]),
        (
            429,
            &json!("API rate limit exceeded"),
            &json!("rate_limit_exceeded")
        )
    );
}

#[tokio::test]
async fn bad_bodies_are_422_naming_the_field_and_not_charged() {
    let app = spawn_app().await;
    let key = app.key(5, 1000).await;
    let cases = [
        ("{not json", None, "The request body is not valid JSON"),
        ("", None, "The request body is not valid JSON"),
        ("[1, 2]", None, "The request body must be a JSON object"),
        (r#"{"data": {}}"#, Some("code"), "code: field required"),
        (r#"{"code": null}"#, Some("code"), "code: field required"),
        (r#"{"code": 1}"#, Some("code"), "code: must be a string"),
        (r#"{"code": ["x"]}"#, Some("code"), "code: must be a string"),
        (
            r#"{"code": "x = 1", "data": [1]}"#,
            Some("data"),
            "data: must be a JSON object",
        ),
        (
            r#"{"code": "x = 1", "data": "s"}"#,
            Some("data"),
            "data: must be a JSON object",
        ),
    ];
    for (body, field, detail) in cases {
        let response = app.execute(&key, body).await;
        assert!(
            header(&response, "ratelimit-limit").is_some(),
            "authenticated responses carry quota headers"
        );
        let (status, json_body) = json(response).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(json_body["code"], "invalid_request", "{body}");
        assert!(
            json_body["detail"].as_str().unwrap().starts_with(detail),
            "{body}: {json_body}"
        );
        assert_eq!(
            json_body.get("field").and_then(|f| f.as_str()),
            field,
            "{body}"
        );
    }
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(usage["executions_used"], 0);
}

#[tokio::test]
async fn data_past_the_nesting_limit_is_422_and_not_charged() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let limit = pyexec::sandbox::MAX_DATA_DEPTH;
    for (open, close) in [("[", "]"), (r#"{"k": "#, "}")] {
        // `data`'s own object is the first level.
        let body = |depth: usize| {
            let nested = format!("{}1{}", open.repeat(depth - 1), close.repeat(depth - 1));
            format!(r#"{{"code": "result = 1", "data": {{"d": {nested}}}}}"#)
        };
        let (status, reply) = json(app.execute(&key, &body(limit)).await).await;
        assert_eq!((status, &reply["result"]), (200, &json!(1)), "{reply}");
        let (status, reply) = json(app.execute(&key, &body(limit + 1)).await).await;
        assert_eq!(
            (status, &reply["code"], &reply["field"]),
            (422, &json!("invalid_request"), &json!("data")),
            "{reply}"
        );
        let detail = reply["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("the nesting limit is {limit} levels")),
            "{detail}"
        );
    }
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(usage["executions_used"], 2);
}

#[tokio::test]
async fn oversized_bodies_and_inputs_are_413() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let input_limit = app.state.sandbox.limits().input_bytes;
    // Over the input limit, under the body limit: refused by the sandbox's input check.
    let body = json!({"code": format!("# {}", "x".repeat(input_limit))}).to_string();
    let (status, json_body) = json(app.execute(&key, &body).await).await;
    assert_eq!(
        (status, &json_body["code"]),
        (413, &json!("payload_too_large"))
    );
    // Over the body limit: refused while reading.
    let body = json!({"code": "x".repeat(app.state.body_limit + 1)}).to_string();
    let (status, json_body) = json(app.execute(&key, &body).await).await;
    assert_eq!(
        (status, &json_body["code"]),
        (413, &json!("payload_too_large"))
    );
}

#[tokio::test]
async fn non_json_content_types_are_415() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let response = app
            .client
            .post(format!("{}/execute", app.base))
            .header("X-API-Key", &key)
            .header("Content-Type", content_type)
            .body(OK_BODY)
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(
            (status, &body["code"]),
            (415, &json!("unsupported_media_type")),
            "{content_type}"
        );
    }
    // No content type at all is read as JSON, and `application/json; charset=utf-8` is JSON.
    let response = app
        .client
        .post(format!("{}/execute", app.base))
        .header("X-API-Key", &key)
        .body(OK_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .client
        .post(format!("{}/execute", app.base))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(OK_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    let (status, body) = json(app.get("/nope", None).await).await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Not found", "code": "not_found"}))
    );
    let (status, body) = json(app.get("/execute", None).await).await;
    assert_eq!((status, &body["code"]), (405, &json!("method_not_allowed")));
}

#[tokio::test]
async fn a_full_sandbox_is_503_with_retry_after_and_not_charged() {
    let app = spawn_app_with(sandbox_with(1, 0), 32).await;
    let key = app.key(10, 1000).await;
    let running = app.execute_in_background(&key, SLEEP_BODY);
    app.until_running().await;
    let response = app.execute(&key, OK_BODY).await;
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let (status, body) = json(response).await;
    assert_eq!((status, &body["code"]), (503, &json!("overloaded")));
    assert_eq!(running.await.unwrap().status(), 200);
    let (_, usage) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(usage["executions_used"], 1);
}

#[tokio::test]
async fn one_key_cannot_exceed_its_concurrency_cap() {
    let app = spawn_app_with(super::helpers::sandbox_with(2, 8), 1).await;
    let key = app.key(10, 1000).await;
    let running = app.execute_in_background(&key, SLEEP_BODY);
    app.until_running().await;
    let response = app.execute(&key, OK_BODY).await;
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let (status, body) = json(response).await;
    assert_eq!(
        (status, &body["code"]),
        (429, &json!("concurrency_limit_exceeded"))
    );
    // Another key is not affected.
    let other = app.key(10, 1000).await;
    assert_eq!(app.execute(&other, OK_BODY).await.status(), 200);
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(app.execute(&key, OK_BODY).await.status(), 200);
}
