//! Abuse of HTTP itself: truncated and oversized requests, huge headers, slow connections and
//! floods of invalid keys. None may produce a 5xx, a hang, or hurt other clients.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{SANDBOX, TestApp, json, post_execute, spawn_app, spawn_server};

fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Reads what the server sends until it closes or `limit` passes.
async fn read_reply(stream: &mut TcpStream, limit: Duration) -> String {
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// Opens a connection and sends a `POST /execute` whose headers promise 100 bytes of body,
/// and the first 12 of them; the key it used, and the connection.
async fn start_a_body(app: &TestApp) -> (String, TcpStream) {
    let key = app.roomy_key().await;
    let mut stream = TcpStream::connect(host_port(&app.base)).await.unwrap();
    let request = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"code\": \"res"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    (key, stream)
}

#[tokio::test]
async fn a_truncated_body_is_a_clear_error_not_a_hang() {
    let app = spawn_app().await;
    let (key, mut stream) = start_a_body(&app).await;
    stream.shutdown().await.unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server hung"
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    let (status, _) = json(app.execute(&key, r#"{"code": "result = 1"}"#).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn huge_headers_are_refused() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    for headers in [
        format!("X-Big: {}\r\n", "a".repeat(1 << 20)),
        (0..500)
            .map(|i| format!("X-Many-{i}: v\r\n"))
            .collect::<String>(),
    ] {
        let mut stream = TcpStream::connect(host_port(&app.base)).await.unwrap();
        let request = format!("GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
            "{}",
            &reply[..reply.len().min(200)]
        );
    }
    let (status, _) = json(app.execute(&key, r#"{"code": "result = 1"}"#).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn slow_connections_neither_block_others_nor_linger() {
    let app = spawn_app().await;
    let key = app.roomy_key().await;
    // Two hundred clients that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(host_port(&app.base)).await.unwrap();
        stream
            .write_all(b"POST /execute HTTP/1.1\r\nHost: x\r\nX-Slo")
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let (status, _) = json(app.execute(&key, r#"{"code": "result = 1"}"#).await).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // After the header-read timeout the server has closed every one of them.
    tokio::time::sleep(pyexec::api::HEADER_READ_TIMEOUT + Duration::from_secs(1)).await;
    for stream in &mut slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "a slow connection is still open"
        );
    }
}

#[tokio::test]
async fn a_flood_of_invalid_keys_is_cheap_and_harmless() {
    let app = spawn_app().await;
    let good = app.roomy_key().await;
    let known_id = &good[..16];
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..16 {
        let (http, base) = (app.client.clone(), app.base.clone());
        let known_id = known_id.to_owned();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..100 {
                // Unknown ids, and the known id with wrong secrets.
                let key = if i % 2 == 0 {
                    format!("sk_test_{client:04}{i:04}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                } else {
                    format!("{known_id}{:032}", client * 1000 + i)
                };
                let response = post_execute(&http, &base, &key, r#"{"code": "result = 1"}"#).await;
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    for client in clients {
        assert!(client.await.unwrap().iter().all(|&status| status == 401));
    }
    // 1,600 rejections cost no executions and little time.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let (status, usage) = json(app.get("/usage", Some(&good)).await).await;
    assert_eq!((status, &usage["executions_used"]), (200, &json!(0)));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_a_clear_error_after_the_body_read_timeout() {
    let app = spawn_app().await;
    // Nothing more arrives, and the connection stays open.
    let (_, mut stream) = start_a_body(&app).await;
    // Time is paused: it jumps ahead whenever every task waits, so this takes no real time.
    let started = tokio::time::Instant::now();
    let reply = read_reply(&mut stream, pyexec::api::BODY_READ_TIMEOUT * 2).await;
    let waited = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains(r#""code":"unreadable_body""#), "{reply}");
    assert!(
        waited >= pyexec::api::BODY_READ_TIMEOUT && waited < pyexec::api::BODY_READ_TIMEOUT * 2,
        "answered after {waited:?}"
    );
}

/// `GET /health` on `stream`, asking the server to close it afterwards; the reply.
async fn health_over(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_reply(stream, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_connection_past_the_cap_is_closed_and_a_freed_slot_is_reused() {
    let cap = 4;
    let app = spawn_server(SANDBOX.clone(), 32, cap).await;
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(TcpStream::connect(host_port(&app.base)).await.unwrap());
    }
    // One more: accepted by the kernel, closed by the server without a reply.
    let mut refused = TcpStream::connect(host_port(&app.base)).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection past the cap was served: {read:?}"
    );
    // The connections within the cap are served.
    let reply = health_over(&mut held[0]).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // `Connection: close` ended that one and freed its slot: a new connection gets it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(host_port(&app.base)).await.unwrap();
        let reply = health_over(&mut stream).await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
