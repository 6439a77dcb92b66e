//! Executions on CPython in process: the contract every runtime keeps (data in, result out,
//! output captured, each way an execution ends), numpy and pandas values, and isolation.

use pyexec::sandbox::{ErrorKind, ExecutionError, Outcome};
use serde_json::{Value, json};

use super::cpython;

fn result(outcome: &Outcome) -> Value {
    match &outcome.result {
        Ok(raw) => serde_json::from_str(raw.get()).unwrap(),
        Err(error) => panic!(
            "expected a result, got {error:?}\nstderr: {}",
            outcome.stderr
        ),
    }
}

fn error(outcome: &Outcome) -> &ExecutionError {
    outcome
        .result
        .as_ref()
        .expect_err("expected the execution to fail")
}

#[tokio::test]
async fn the_prototypes_example_runs_with_data_and_output() {
    let Some(outcome) = cpython(
        "print('mean of', len(data['numbers']))\nresult = sum(data['numbers']) / len(data['numbers'])",
        Some(r#"{"numbers": [1, 2, 3, 4, 5]}"#),
    )
    .await
    else {
        return;
    };
    assert_eq!(result(&outcome), json!(3.0));
    assert_eq!(outcome.stdout, "mean of 5\n");
    assert_eq!(outcome.runtime, "cpython");
    assert!(outcome.fuel_used > 0);
}

#[tokio::test]
async fn the_code_runs_as_main_in_cpython_315_with_no_result_as_null() {
    let Some(outcome) = cpython(
        "import sys\nassert __name__ == '__main__'\nprint(sys.implementation.name, sys.version_info[:2])",
        None,
    )
    .await
    else {
        return;
    };
    assert_eq!(result(&outcome), Value::Null);
    assert_eq!(outcome.stdout, "cpython (3, 15)\n");
}

#[tokio::test]
async fn numpy_and_pandas_values_become_json() {
    let code = "import numpy as np, pandas as pd
df = pd.DataFrame(data['rows'])
result = {
    'array': np.arange(6).reshape(2, 3),
    'scalar': np.float64(2.5),
    'int': np.int32(7),
    'bool': np.bool_(True),
    'std': float(np.linspace(0, 1, 1000).std()),
    'means': df.groupby('g')['x'].mean(),
    'frame': df.head(2),
}";
    let data = r#"{"rows": [{"g": "a", "x": 1}, {"g": "b", "x": 2}, {"g": "a", "x": 3}]}"#;
    let Some(outcome) = cpython(code, Some(data)).await else {
        return;
    };
    let value = result(&outcome);
    assert_eq!(value["array"], json!([[0, 1, 2], [3, 4, 5]]));
    assert_eq!(
        (&value["scalar"], &value["int"], &value["bool"]),
        (&json!(2.5), &json!(7), &json!(true))
    );
    assert!(
        (value["std"].as_f64().unwrap() - 0.28896).abs() < 1e-4,
        "{value}"
    );
    // A Series is its values; a DataFrame its rows, as objects.
    assert_eq!(value["means"], json!([2.0, 2.0]));
    assert_eq!(
        value["frame"],
        json!([{"g": "a", "x": 1}, {"g": "b", "x": 2}])
    );
}

#[tokio::test]
async fn values_json_cannot_hold_are_refused_by_name() {
    for (code, expected) in [
        (
            "result = {1, 2}",
            "Object of type set is not JSON serializable",
        ),
        (
            "result = float('nan')",
            "Out of range float values are not JSON compliant: nan",
        ),
        (
            "import numpy as np\nresult = np.array([1.0, np.inf])",
            "Out of range float values are not JSON compliant: inf",
        ),
        (
            "import numpy as np\nresult = np.array([1j])",
            "numpy values of dtype complex128 are not JSON serializable",
        ),
        (
            "result = []\nresult.append(result)",
            "Circular reference detected",
        ),
    ] {
        let Some(outcome) = cpython(code, None).await else {
            return;
        };
        let error = error(&outcome);
        assert_eq!(
            error.kind,
            ErrorKind::ResultNotSerializable,
            "{code}: {error:?}"
        );
        assert_eq!(error.message, expected, "{code}");
    }
}

#[tokio::test]
async fn a_subclass_serialises_as_its_value_without_running_its_code() {
    let code = "class Sneaky(dict):
    def items(self):
        raise RuntimeError('ran')
    def __iter__(self):
        raise RuntimeError('ran')
class Loud(int):
    def __repr__(self):
        return 'forged'
result = Sneaky(a=Loud(3))";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    assert_eq!(result(&outcome), json!({"a": 3}));
}

#[tokio::test]
async fn an_exception_reports_the_users_frames_with_their_lines() {
    let code = "import json\ndef parse(text):\n    return json.loads(text)\nparse('{')";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    let error = error(&outcome);
    assert_eq!(
        (error.kind, error.type_name.as_str(), error.line),
        (ErrorKind::PythonException, "JSONDecodeError", Some(3))
    );
    let traceback = error.traceback.as_deref().unwrap();
    assert!(
        traceback.starts_with("Traceback (most recent call last):\n  File \"<code>\", line 4, in <module>\n    parse('{')"),
        "{traceback}"
    );
    assert!(
        traceback.contains("line 3, in parse\n    return json.loads(text)"),
        "{traceback}"
    );
    assert!(
        !traceback.contains("json/decoder") && !traceback.contains("pyexec"),
        "{traceback}"
    );
}

#[tokio::test]
async fn a_syntax_error_names_its_line() {
    let Some(outcome) = cpython("x = 1\ny = (", None).await else {
        return;
    };
    let error = error(&outcome);
    assert_eq!(
        (error.kind, error.line),
        (ErrorKind::SyntaxError, Some(2)),
        "{error:?}"
    );
    assert!(
        error.traceback.as_deref().unwrap().contains("<code>"),
        "{error:?}"
    );
}

#[tokio::test]
async fn sys_exit_is_clean_at_zero_and_an_error_otherwise() {
    let Some(clean) = cpython("import sys\nresult = 1\nsys.exit(0)", None).await else {
        return;
    };
    assert_eq!(result(&clean), json!(1));
    let failed = cpython("import sys\nsys.exit(3)", None).await.unwrap();
    assert_eq!(error(&failed).kind, ErrorKind::SystemExit);
}

#[tokio::test]
async fn every_limit_ends_the_execution_with_its_own_kind() {
    for (code, kind) in [
        ("while True: pass", ErrorKind::FuelExhausted),
        ("import time\ntime.sleep(30)", ErrorKind::Timeout),
        ("x = bytearray(600 << 20)", ErrorKind::MemoryLimit),
        ("while True: print('x' * 1000)", ErrorKind::OutputLimit),
        ("result = 'x' * (100 << 10)", ErrorKind::OutputLimit),
        ("import os\nos._exit(3)", ErrorKind::ProcessExit),
        // CPython keeps Python frames in linear memory, and checks its C stack before it
        // overflows: unbounded recursion runs out of memory first.
        (
            "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1) + 1\nf(0)",
            ErrorKind::MemoryLimit,
        ),
    ] {
        let Some(outcome) = cpython(code, None).await else {
            return;
        };
        assert_eq!(error(&outcome).kind, kind, "{code}: {outcome:?}");
    }
}

#[tokio::test]
async fn deep_recursion_in_python_or_c_is_a_recursion_error() {
    for code in [
        "def f(n): return f(n + 1)\nf(0)",
        "nested = []\nfor _ in range(200000):\n    nested = [nested]\nrepr(nested)",
    ] {
        let Some(outcome) = cpython(code, None).await else {
            return;
        };
        let error = error(&outcome);
        assert_eq!(
            (error.kind, error.type_name.as_str()),
            (ErrorKind::PythonException, "RecursionError"),
            "{code}"
        );
    }
}

#[tokio::test]
async fn what_the_code_prints_or_sends_cannot_pass_for_the_reply() {
    let code = r#"import _host, _pyexec
print('{"ok": true, "result": "forged"}')
try:
    _host.call(b'not a reply')
except OSError as e:
    refused = type(e).__name__
try:
    _host.call(b'{"ok": false, "error": {"kind": "internal", "type": "X", "message": "m", "line": null, "traceback": null}}')
except OSError as e:
    refused_kind = type(e).__name__
result = [refused, refused_kind]"#;
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    assert_eq!(result(&outcome), json!(["OSError", "OSError"]));
}

#[tokio::test]
async fn every_execution_starts_from_the_snapshot_and_draws_fresh_randomness() {
    let code = "import sys, random, numpy as np
seen = getattr(np, 'planted', None)
np.planted = 'left behind'
sys.modules['json'] = None
result = [seen, random.random(), float(np.random.rand())]";
    let Some(first) = cpython(code, None).await else {
        return;
    };
    let second = cpython(code, None).await.unwrap();
    let (first, second) = (result(&first), result(&second));
    assert_eq!((&first[0], &second[0]), (&Value::Null, &Value::Null));
    assert_ne!(first[1], second[1], "random is reseeded");
    assert_ne!(first[2], second[2], "numpy's global generator is reseeded");
}

#[tokio::test]
async fn the_host_is_out_of_reach_and_the_standard_library_read_only() {
    let code = "import os, subprocess
outcomes = []
for attempt in (
    lambda: open('/etc/passwd').read(),
    lambda: open('/usr/local/lib/planted.py', 'w'),
    lambda: os.listdir('/root'),
    lambda: os.fork(),
    lambda: subprocess.run(['ls']),
    lambda: __import__('socket').create_connection(('127.0.0.1', 80)),
    lambda: __import__('_posixsubprocess'),
    lambda: __import__('ctypes').string_at(1024, 16),
    lambda: __import__('ctypes').CDLL(None),
):
    try:
        attempt()
        outcomes.append('allowed')
    except Exception as e:
        outcomes.append(type(e).__name__)
result = {'outcomes': outcomes, 'environ': dict(os.environ)}";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    let value = result(&outcome);
    let outcomes = value["outcomes"].as_array().unwrap();
    assert!(!outcomes.contains(&json!("allowed")), "{value}");
    let environ = value["environ"].as_object().unwrap();
    assert!(
        !environ.contains_key("PATH") && !environ.contains_key("PYEXEC_TEST_CPYTHON_DIR"),
        "{value}"
    );
}

#[tokio::test]
async fn matplotlib_draws_with_agg() {
    let code = "import io, matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [1, 4, 9])
ax.set_title('squares')
png = io.BytesIO()
fig.savefig(png, format='png')
result = [plt.get_backend().lower(), png.getvalue()[:4] == b'\\x89PNG', len(png.getvalue()) > 1000]";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    assert_eq!(
        result(&outcome),
        json!(["agg", true, true]),
        "{}",
        outcome.stderr
    );
}

#[tokio::test]
async fn open_figures_come_back_as_png_images() {
    let code = "import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.figure()
plt.bar(['a', 'b'], [1, 2])
result = len(plt.get_fignums())";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    assert_eq!(result(&outcome), json!(2));
    assert_eq!(outcome.images.len(), 2);
    for image in &outcome.images {
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&image.data)
            .unwrap();
        assert_eq!((image.format.as_str(), &png[..4]), ("png", &b"\x89PNG"[..]));
    }
    let closed = cpython(
        "import matplotlib.pyplot as plt\nplt.figure()\nplt.close()",
        None,
    )
    .await
    .unwrap();
    assert!(closed.images.is_empty());
}

#[tokio::test]
async fn images_share_the_results_output_limit() {
    let code = "import numpy as np, matplotlib.pyplot as plt
plt.figure(figsize=(8, 8))
plt.imshow(np.random.rand(400, 400))";
    let Some(outcome) = cpython(code, None).await else {
        return;
    };
    let error = error(&outcome);
    assert_eq!(error.kind, ErrorKind::OutputLimit, "{error:?}");
    assert!(outcome.images.is_empty());
}

#[tokio::test]
async fn code_that_breaks_the_driver_gets_its_own_error_not_internal() {
    for code in [
        "import sys\nsys.stdout = None\nresult = 1",
        "import _pyexec\n_pyexec._JsonWriter = None\nresult = 1",
        "import json\njson.dumps = None\n1/0",
    ] {
        let Some(outcome) = cpython(code, None).await else {
            return;
        };
        let kind = outcome.result.as_ref().map_err(|error| error.kind);
        assert!(
            matches!(kind, Ok(_) | Err(ErrorKind::PythonException)),
            "{code}: {outcome:?}"
        );
    }
}
