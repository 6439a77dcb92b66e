//! Quota headers, `/usage`, `/health`, `/metrics` and `/openapi.json`.

use serde_json::json;

use super::helpers::{header, json, spawn_app};

#[tokio::test]
async fn authenticated_responses_carry_quota_headers() {
    let app = spawn_app().await;
    let key = app.key(10, 5).await;
    let response = app.execute(&key, r#"{"code": "result = 1"}"#).await;
    assert_eq!(header(&response, "ratelimit-limit"), Some("5"));
    assert_eq!(header(&response, "ratelimit-remaining"), Some("4"));
    let reset: u64 = header(&response, "ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset), "{reset}");
    assert_eq!(header(&response, "x-executions-left"), Some("9"));
    assert!(header(&response, "x-request-id").is_some());

    let response = app.get("/usage", Some(&key)).await;
    assert_eq!(
        header(&response, "ratelimit-remaining"),
        Some("4"),
        "/usage does not consume"
    );
    assert_eq!(header(&response, "x-executions-left"), Some("9"));
}

#[tokio::test]
async fn usage_describes_the_calling_key() {
    let app = spawn_app().await;
    let key = app.key(7, 30).await;
    app.execute(&key, r#"{"code": "pass"}"#).await;
    let (status, body) = json(app.get("/usage", Some(&key)).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], key[..16]);
    assert_eq!(
        (
            &body["env"],
            &body["executions_used"],
            &body["executions_left"]
        ),
        (&json!("test"), &json!(1), &json!(6))
    );
    assert_eq!(body["rate_limit"]["limit_per_minute"], 30);
    assert_eq!(body["limits"]["fuel"], app.state.sandbox.limits().fuel);
    let (status, _) = json(app.get("/usage", None).await).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn health_needs_no_key() {
    let app = spawn_app().await;
    let (status, body) = json(app.get("/health", None).await).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
}

/// The value of a sample line `name{labels} value` in a metrics exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_after_an_execution() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let before = app.get("/metrics", None).await.text().await.unwrap();
    app.execute(&key, r#"{"code": "result = 1"}"#).await;
    app.execute(&key, r#"{"code": "1/0"}"#).await;
    app.get("/nope", None).await;
    let response = app.get("/metrics", None).await;
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let after = response.text().await.unwrap();
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(r#"pyexec_executions_total{runtime="rustpython",outcome="success"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"pyexec_executions_total{runtime="rustpython",outcome="python_exception"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"pyexec_execution_fuel_count{runtime="rustpython"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"pyexec_execution_duration_seconds_count{runtime="rustpython"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"pyexec_http_responses_total{method="POST",route="/execute",status="200"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"pyexec_http_responses_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert!(after.contains("pyexec_queue_depth "));
    assert!(after.contains("pyexec_executions_running "));
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let app = spawn_app().await;
    let text = app.get("/openapi.json", None).await.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let paths = spec.paths.expect("paths");
    let documented: Vec<(String, &str)> = paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("delete", item.delete.is_some()),
                ("get", item.get.is_some()),
                ("post", item.post.is_some()),
            ]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(move |(method, _)| (path.clone(), method))
        })
        .collect();
    let mut documented = documented;
    documented.sort();
    assert_eq!(
        documented,
        [
            ("/execute".to_owned(), "post"),
            ("/health".to_owned(), "get"),
            ("/metrics".to_owned(), "get"),
            ("/openapi.json".to_owned(), "get"),
            ("/runtimes".to_owned(), "get"),
            ("/sessions".to_owned(), "get"),
            ("/sessions".to_owned(), "post"),
            ("/sessions/{id}".to_owned(), "delete"),
            ("/sessions/{id}".to_owned(), "get"),
            ("/sessions/{id}/execute".to_owned(), "post"),
            ("/usage".to_owned(), "get"),
        ]
    );
    // Every documented route answers with something other than 404/405.
    for (path, method) in &documented {
        let request = match *method {
            "post" => app.client.post(format!("{}{path}", app.base)),
            "delete" => app.client.delete(format!("{}{path}", app.base)),
            _ => app.client.get(format!("{}{path}", app.base)),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
    }
    // The error kinds the document promises are the sandbox's.
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kinds = &document["components"]["schemas"]["ErrorKind"]["enum"];
    let expected: Vec<&str> = pyexec::sandbox::ErrorKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, &json!(expected));
    // The runtime choice: the request field, the reply's runtime, the list of the rest.
    let schemas = &document["components"]["schemas"];
    assert!(schemas["ExecuteRequest"]["properties"]["runtime"].is_object());
    assert!(schemas["ExecuteResponse"]["properties"]["runtime"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["available"].is_object());
    // A turn's reply is /execute's plus the session; the session errors are documented.
    let turn = serde_json::to_string(&schemas["TurnResponse"]).unwrap();
    for field in [
        "schemas/ExecuteResponse\"",
        "\"session_id\"",
        "\"session_closed\"",
    ] {
        assert!(turn.contains(field), "TurnResponse lacks {field}: {turn}");
    }
    let responses = &document["paths"]["/sessions/{id}/execute"]["post"]["responses"];
    for (status, code) in [("404", "session_not_found"), ("409", "session_busy")] {
        let description = responses[status]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(description.contains(code), "{status}: {description}");
    }
    let opening = &document["paths"]["/sessions"]["post"]["responses"];
    assert!(
        opening["429"]["description"]
            .as_str()
            .unwrap()
            .contains("session_limit_exceeded")
    );
    assert!(
        opening["503"]["description"]
            .as_str()
            .unwrap()
            .contains("overloaded")
    );
    let info = &schemas["RuntimeInfo"]["properties"];
    for field in ["name", "python_version", "preloaded", "packages", "limits"] {
        assert!(info[field].is_object(), "RuntimeInfo.{field}");
    }
    let unprocessable = &document["paths"]["/execute"]["post"]["responses"]["422"]["description"];
    assert!(unprocessable.as_str().unwrap().contains("runtime"));
}
