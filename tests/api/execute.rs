//! `POST /execute`: the prototype's contract, byte for byte in the fields it defined, and ours.

use serde_json::json;

use super::helpers::{json, spawn_app};

const PROTOTYPE_EXAMPLE: &str = r#"{"code": "result = sum(data['numbers']) / len(data['numbers'])", "data": {"numbers": [1, 2, 3, 4, 5]}}"#;

#[tokio::test]
async fn the_prototype_example_answers_as_the_prototype_did() {
    let app = spawn_app().await;
    let key = app.key(1000, 60).await;
    let response = app.execute(&key, PROTOTYPE_EXAMPLE).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    // The prototype's fields first and exactly: the float stays `3.0`.
    assert!(
        text.starts_with(r#"{"success":true,"result":3.0,"executions_left":999,"#),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["stdout"], "");
    assert!(body["fuel_used"].as_u64().unwrap() > 0);
    assert!(body["duration_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn the_prototype_curl_example_returns_three() {
    let app = spawn_app().await;
    let key = app.key(1000, 60).await;
    let (status, body) = json(
        app.execute(
            &key,
            r#"{"code": "result = data[\"x\"] + data[\"y\"]", "data": {"x": 1, "y": 2}}"#,
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            status,
            &body["success"],
            &body["result"],
            &body["executions_left"]
        ),
        (200, &json!(true), &json!(3), &json!(999))
    );
}

#[tokio::test]
async fn data_is_optional_and_results_can_be_anything_json() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let (_, body) = json(
        app.execute(
            &key,
            r#"{"code": "result = {'a': [1, None, True], 'b': 'é'}"}"#,
        )
        .await,
    )
    .await;
    assert_eq!(body["result"], json!({"a": [1, null, true], "b": "é"}));
    let (_, body) = json(
        app.execute(&key, r#"{"code": "x = 1", "data": null}"#)
            .await,
    )
    .await;
    assert_eq!(
        (&body["success"], &body["result"]),
        (&json!(true), &json!(null))
    );
}

#[tokio::test]
async fn big_integers_cross_http_exactly() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    let response = app
        .execute(
            &key,
            r#"{"code": "result = data['n'] * 10", "data": {"n": 123456789012345678901234567890}}"#,
        )
        .await;
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#""result":1234567890123456789012345678900,"#),
        "{text}"
    );
}

#[tokio::test]
async fn failing_code_is_a_200_with_the_error_and_partial_stdout() {
    let app = spawn_app().await;
    let key = app.key(10, 60).await;
    let (status, body) = json(
        app.execute(&key, r#"{"code": "print('partial')\nx = 1\nx / 0"}"#)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["stdout"], "partial\n");
    assert_eq!(body["executions_left"], 9);
    let error = &body["error"];
    assert_eq!(error["kind"], "python_exception");
    assert_eq!(error["type"], "ZeroDivisionError");
    assert_eq!(error["message"], "division by zero");
    assert_eq!(error["line"], 3);
    assert!(
        error["traceback"]
            .as_str()
            .unwrap()
            .contains("line 3, in <module>")
    );
    assert!(body.get("result").is_none());
}

#[tokio::test]
async fn limits_are_failures_of_the_code_and_are_charged() {
    let app = spawn_app().await;
    let key = app.key(10, 60).await;
    let (status, body) = json(app.execute(&key, r#"{"code": "while True: pass"}"#).await).await;
    assert_eq!(
        (status, &body["error"]["kind"], &body["executions_left"]),
        (200, &json!("fuel_exhausted"), &json!(9))
    );
}
