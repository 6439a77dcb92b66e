//! Any bytes as the body of `POST /execute`, through the real router, key store and sandbox:
//! never a 5xx, never a reply that is not JSON in one of the documented shapes, and never an
//! `internal` outcome (a RustPython panic reached from ordinary input).

#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use pyexec::api::{self, AppState};
use pyexec::keys::{Env, KeyStore, NewKey};
use pyexec::sandbox::{Limits, Sandbox, SandboxConfig};
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    key: String,
    _data_dir: std::path::PathBuf,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let data_dir = std::env::temp_dir().join(format!("pyexec-fuzz-{}", std::process::id()));
    let keys = KeyStore::open(&data_dir).expect("a key store");
    let (key, _) = keys
        .create(NewKey {
            name: "fuzz".into(),
            description: "cargo fuzz".into(),
            env: Env::Test,
            executions_limit: u64::MAX,
            rate_limit_per_minute: u32::MAX,
            fuel_limit: None,
        })
        .expect("a key");
    let cache = std::env::var_os("PYEXEC_MODULE_CACHE_DIR").map(Into::into);
    let sandbox = Sandbox::new(SandboxConfig {
        limits: Limits {
            fuel: 200_000_000,
            timeout: std::time::Duration::from_secs(2),
            ..Limits::default()
        },
        workers: 2,
        queue: 64,
        cache_dir: cache,
        pooling: false,
    })
    .expect("a sandbox");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        router: api::app(AppState::new(keys, sandbox, 64)),
        runtime,
        key: key.expose_secret().to_owned(),
        _data_dir: data_dir,
    }
});

fuzz_target!(|body: &[u8]| {
    let fixture = &*FIXTURE;
    let request = Request::post("/execute")
        .header("X-API-Key", &fixture.key)
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let (status, reply) = fixture.runtime.block_on(async {
        let response = fixture.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    });
    assert!(status < 500, "status {status}");
    let reply: Value = serde_json::from_slice(&reply).expect("every reply is JSON");
    if status == 200 {
        assert!(reply["success"].is_boolean(), "{reply}");
        assert_ne!(reply["error"]["kind"], "internal", "{reply}");
    } else {
        assert!(reply["detail"].is_string() && reply["code"].is_string(), "{reply}");
    }
});
