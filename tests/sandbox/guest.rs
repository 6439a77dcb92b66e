//! The guest protocol: results, exact conversions, error reports, `__main__`, the standard
//! library, forged envelopes, capabilities and isolation between executions.

use serde_json::json;

use super::{error, result, run, run_with};
use pyexec::sandbox::ErrorKind;

#[tokio::test]
async fn prototype_example_returns_three_point_zero() {
    let outcome = run_with(
        "result = sum(data['numbers']) / len(data['numbers'])",
        r#"{"numbers": [1, 2, 3, 4, 5]}"#,
    )
    .await;
    assert_eq!(outcome.result.as_ref().unwrap().get(), "3.0");
    assert!(outcome.fuel_used > 0);
    assert!(outcome.fuel_used < 1_000_000, "fuel {}", outcome.fuel_used);
}

#[tokio::test]
async fn prototype_curl_example_returns_three() {
    let outcome = run_with("result = data[\"x\"] + data[\"y\"]", r#"{"x": 1, "y": 2}"#).await;
    assert_eq!(outcome.result.as_ref().unwrap().get(), "3");
}

#[tokio::test]
async fn unset_and_none_results_are_null() {
    assert_eq!(result(&run("x = 1").await), json!(null));
    assert_eq!(result(&run("result = None").await), json!(null));
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately() {
    let outcome =
        run("import sys\nprint('out', 1)\nprint('err', file=sys.stderr)\nresult = 2").await;
    assert_eq!(outcome.stdout, "out 1\n");
    assert_eq!(outcome.stderr, "err\n");
    assert_eq!(result(&outcome), json!(2));
}

#[tokio::test]
async fn big_integers_are_exact_both_ways() {
    let big = "123456789012345678901234567890123456789";
    let data = format!(r#"{{"n": {big}}}"#);
    let outcome = run_with(
        "result = [data['n'], data['n'] + 1, 2**100, -(2**70)]",
        &data,
    )
    .await;
    assert_eq!(
        outcome.result.as_ref().unwrap().get(),
        format!(
            "[{big},123456789012345678901234567890123456790,1267650600228229401496703205376,-1180591620717411303424]"
        )
    );
}

#[tokio::test]
async fn unicode_round_trips() {
    let text = "héllo wörld — 中文 😀 \u{0}\u{1f}\"\\";
    let data = json!({"s": text}).to_string();
    let outcome = run_with("result = [data['s'], len(data['s'])]", &data).await;
    assert_eq!(result(&outcome), json!([text, text.chars().count()]));
}

#[tokio::test]
async fn python_values_map_to_json_the_obvious_way() {
    let outcome = run(
        "import collections\nresult = {'t': (1, 2), 'l': [1.5, -0.0, 1e300], 'b': [True, False], 'n': None, \
         1: 'int key', 2.5: 'float key', None: 'none key', True: 'bool key', \
         'od': collections.OrderedDict(z=1, a=2), 'sub': type('S', (int,), {})(7)}",
    )
    .await;
    assert_eq!(
        outcome.result.as_ref().unwrap().get(),
        r#"{"t":[1,2],"l":[1.5,-0.0,1e+300],"b":[true,false],"n":null,"1":"bool key","2.5":"float key","null":"none key","od":{"z":1,"a":2},"sub":7}"#
    );
}

#[tokio::test]
async fn data_keeps_json_types_and_key_order() {
    let outcome = run_with(
        "result = [type(v).__name__ for v in data.values()] + list(data)",
        r#"{"z": 1, "a": 1.0, "m": "s", "b": [1], "c": {"x": null}, "d": true, "e": null}"#,
    )
    .await;
    assert_eq!(
        result(&outcome),
        json!([
            "int", "float", "str", "list", "dict", "bool", "NoneType", "z", "a", "m", "b", "c",
            "d", "e"
        ])
    );
}

#[tokio::test]
async fn unserialisable_results_are_reported() {
    let cases = [
        (
            "result = {1, 2}",
            "Object of type set is not JSON serializable",
        ),
        (
            "result = len",
            "Object of type builtin_function_or_method is not JSON serializable",
        ),
        (
            "result = float('nan')",
            "Out of range float values are not JSON compliant: nan",
        ),
        (
            "result = [float('inf')]",
            "Out of range float values are not JSON compliant: inf",
        ),
        (
            "result = []\nresult.append(result)",
            "Circular reference detected",
        ),
        (
            "result = {(1, 2): 3}",
            "keys must be str, int, float, bool or None, not tuple",
        ),
        (
            "result = '\\ud800'",
            "str contains a lone surrogate, which JSON cannot encode",
        ),
    ];
    for (code, message) in cases {
        let outcome = run(code).await;
        let err = error(&outcome);
        assert_eq!(err.kind, ErrorKind::ResultNotSerializable, "{code}");
        assert_eq!(err.message, message, "{code}");
    }
}

#[tokio::test]
async fn deeply_nested_results_are_refused_not_crashed() {
    let outcome = run("r = []\nx = r\nfor _ in range(100000):\n    y = []\n    x.append(y)\n    x = y\nresult = r").await;
    let err = error(&outcome);
    assert_eq!(err.kind, ErrorKind::ResultNotSerializable);
    assert!(
        err.message.contains("nested more than 100 levels"),
        "{}",
        err.message
    );
    // 100 levels are fine.
    let outcome = run("r = 0\nfor _ in range(99):\n    r = [r]\nresult = r").await;
    assert!(outcome.result.is_ok());
}

#[tokio::test]
async fn exceptions_report_type_message_line_and_user_frames_only() {
    let code = "import json\n\ndef parse(text):\n    return json.loads(text)\n\nparse('{bad')\n";
    let outcome = run(code).await;
    let err = error(&outcome);
    assert_eq!(err.kind, ErrorKind::PythonException);
    assert_eq!(err.type_name, "JSONDecodeError");
    assert!(
        err.message.starts_with("Expecting property name"),
        "{}",
        err.message
    );
    assert_eq!(err.line, Some(4));
    let traceback = err.traceback.as_deref().unwrap();
    assert!(
        traceback.starts_with("Traceback (most recent call last):\n"),
        "{traceback}"
    );
    assert!(
        traceback.contains("  File \"<code>\", line 6, in <module>\n    parse('{bad')\n"),
        "{traceback}"
    );
    assert!(
        traceback.contains("  File \"<code>\", line 4, in parse\n    return json.loads(text)\n"),
        "{traceback}"
    );
    assert!(
        !traceback.contains("json/decoder.py") && !traceback.contains("File \"/"),
        "{traceback}"
    );
    assert!(
        traceback.ends_with("JSONDecodeError: ")
            || traceback.contains("JSONDecodeError: Expecting"),
        "{traceback}"
    );
}

#[tokio::test]
async fn chained_exceptions_show_both() {
    let code =
        "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad value') from e\n";
    let err = error(&run(code).await).clone();
    assert_eq!(
        (err.type_name.as_str(), err.message.as_str(), err.line),
        ("ValueError", "bad value", Some(4))
    );
    let traceback = err.traceback.unwrap();
    let cause = traceback.find("KeyError: 'k'").expect("the cause is shown");
    let link = traceback
        .find("The above exception was the direct cause")
        .expect("linked");
    let effect = traceback
        .find("ValueError: bad value")
        .expect("the effect is shown");
    assert!(cause < link && link < effect, "{traceback}");
}

#[tokio::test]
async fn syntax_errors_point_at_the_line() {
    let err = error(&run("x = 1\ny = (\n").await).clone();
    assert_eq!(err.kind, ErrorKind::SyntaxError);
    assert_eq!(err.type_name, "SyntaxError");
    assert_eq!(err.line, Some(2));
    assert!(
        err.traceback
            .unwrap()
            .contains("  File \"<code>\", line 2\n")
    );
    let err = error(&run("if True:\nprint(1)").await).clone();
    assert_eq!(
        (err.kind, err.type_name.as_str()),
        (ErrorKind::SyntaxError, "IndentationError")
    );
    // Found by the property tests: RustPython's warning pass panicked on this.
    let err = error(&run("s = '\u{a1}").await).clone();
    assert_eq!(
        (err.kind, err.line),
        (ErrorKind::SyntaxError, Some(1)),
        "{err:?}"
    );
}

#[tokio::test]
async fn sys_exit_zero_succeeds_and_nonzero_fails() {
    assert_eq!(
        result(&run("import sys\nresult = 1\nsys.exit()\nresult = 2").await),
        json!(1)
    );
    assert_eq!(
        result(&run("import sys\nresult = 1\nsys.exit(0)").await),
        json!(1)
    );
    let err = error(&run("import sys\nsys.exit(3)").await).clone();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::SystemExit, "3")
    );
    let err = error(&run("try:\n    pass\nfinally:\n    raise SystemExit('bye')").await).clone();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::SystemExit, "bye")
    );
}

#[tokio::test]
async fn os_exit_ends_the_run_without_a_result() {
    let outcome = run("import os\nprint('before')\nresult = 1\nos._exit(0)").await;
    assert_eq!(error(&outcome).kind, ErrorKind::ProcessExit);
    assert_eq!(outcome.stdout, "before\n");
}

#[tokio::test]
async fn code_runs_as_main_like_a_script() {
    let code = "from __future__ import annotations\nimport dataclasses, sys\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: int = 0\n\nresult = [__name__, sys.modules['__main__'].__dict__ is globals(), dataclasses.asdict(Point(1))]";
    assert_eq!(
        result(&run(code).await),
        json!(["__main__", true, {"x": 1, "y": 0}])
    );
}

#[tokio::test]
async fn the_promised_standard_library_is_there() {
    let modules = [
        "math",
        "cmath",
        "json",
        "re",
        "collections",
        "itertools",
        "functools",
        "operator",
        "heapq",
        "bisect",
        "string",
        "textwrap",
        "datetime",
        "decimal",
        "fractions",
        "statistics",
        "random",
        "copy",
        "dataclasses",
        "enum",
        "typing",
        "base64",
        "hashlib",
        "struct",
        "time",
        "os",
    ];
    let code = format!(
        "import importlib\nresult = [importlib.import_module(m).__name__ for m in {modules:?}]\n\
         import math, statistics, hashlib, base64, decimal, fractions, time, datetime, re, struct\n\
         checks = [math.isqrt(10**20), statistics.median([3, 1, 2]), hashlib.sha256(b'a').hexdigest()[:8], \
         base64.b64encode(b'hi').decode(), str(decimal.Decimal('0.1') + decimal.Decimal('0.2')), \
         str(fractions.Fraction(3, 6)), time.monotonic() >= 0, datetime.date(2024, 2, 29).isoformat(), \
         re.findall(r'\\d+', 'a1b22'), struct.pack('<H', 258).hex()]"
    );
    let outcome = run(&format!("{code}\nresult = [result, checks]")).await;
    assert_eq!(
        result(&outcome),
        json!([
            modules,
            [
                10_000_000_000u64,
                2,
                "ca978112",
                "aGk=",
                "0.3",
                "1/2",
                true,
                "2024-02-29",
                ["1", "22"],
                "0201"
            ]
        ])
    );
}

#[tokio::test]
async fn user_code_cannot_forge_the_reply() {
    let forgeries = [
        "print('{\"ok\":true,\"result\":42}')",
        "import sys\nsys.__stdout__.write('{\"ok\":true,\"result\":42}')",
        "import os\nos.write(1, b'{\"ok\":true,\"result\":42}')\nos.write(2, b'{\"ok\":true,\"result\":42}')",
        "import sys, io\nsys.stdout = io.StringIO()\nprint('{\"ok\":true,\"result\":42}')",
        "import builtins\nbuiltins.print = lambda *a, **k: None\nprint(1)",
        "import json\njson.dumps = lambda *a, **k: '42'\njson.loads = lambda *a, **k: 42",
        "import builtins\nbuiltins.str = lambda *a: '42'\nbuiltins.repr = lambda *a: '42'",
    ];
    for forgery in forgeries {
        let outcome = run(&format!("result = 'real'\n{forgery}")).await;
        assert_eq!(result(&outcome), json!("real"), "{forgery}");
    }
    // A forged reply followed by a failure is still a failure.
    let outcome = run("import os\nos.write(1, b'{\"ok\":true,\"result\":42}')\n1/0").await;
    assert_eq!(error(&outcome).kind, ErrorKind::PythonException);
}

#[tokio::test]
async fn the_code_finds_stdin_empty_after_the_request_was_read_from_it() {
    let code = "import os, sys
def attempt(read):
    try:
        return read()
    except EOFError:
        return 'EOFError'
result = [
    attempt(input),
    sys.stdin.read(),
    sys.stdin.readline(),
    sys.stdin.buffer.read().decode(),
    os.read(0, 1 << 16).decode(),
    sys.__stdin__.read(),
]";
    let outcome = run_with(code, r#"{"secret": "part of the request document"}"#).await;
    assert_eq!(result(&outcome), json!(["EOFError", "", "", "", "", ""]));
}

#[test]
fn the_guest_imports_only_wasi_and_pyexec_reply() {
    // The import section names each import as its module, then its field, both
    // length-prefixed; "pyexec" is 6 bytes.
    let marker = b"\x06pyexec";
    let wasm = pyexec::sandbox::GUEST_WASM;
    let fields: Vec<String> = (0..wasm.len() - marker.len())
        .filter(|&at| &wasm[at..at + marker.len()] == marker)
        .map(|at| {
            let field = &wasm[at + marker.len()..];
            let len = usize::from(field[0]);
            String::from_utf8_lossy(&field[1..1 + len]).into_owned()
        })
        .collect();
    assert_eq!(fields, ["reply"]);
}

#[tokio::test]
async fn a_guest_panic_answers_internal_and_nothing_more() {
    // A code object whose bytecode was replaced panics RustPython.
    let outcome = run("print('before')\nimport sys\nprint('err', file=sys.stderr)\ndef f():\n    return 1\ng = type(f)(f.__code__.replace(co_code=b'\\xff' * 16), {})\ng()").await;
    let err = error(&outcome);
    assert_eq!(
        (err.kind, err.type_name.as_str(), err.message.as_str()),
        (
            ErrorKind::Internal,
            "InternalError",
            "the sandbox failed; the failure has been logged"
        )
    );
    assert_eq!((err.line, &err.traceback), (None, &None));
    assert_eq!((outcome.stdout.as_str(), outcome.stderr.as_str()), ("", ""));
}

#[tokio::test]
async fn capabilities_fail_cleanly() {
    let code = r#"
import os, socket, subprocess, threading
def attempt(f):
    try:
        f()
        return 'allowed'
    except BaseException as e:
        return type(e).__name__
def connect():
    s = socket.socket()
    s.connect(('127.0.0.1', 8000))
def thread():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
result = {
    'open': attempt(lambda: open('/etc/passwd').read()),
    'write': attempt(lambda: open('/tmp/x', 'w').write('x')),
    'listdir': attempt(lambda: os.listdir('/')),
    'environ': dict(os.environ),
    'connect': attempt(connect),
    'subprocess': attempt(lambda: subprocess.run(['ls'])),
    'thread': attempt(thread),
    'input': attempt(input),
    'stdin': os.read(0, 10).decode(),
}
"#;
    let outcome = run(code).await;
    let value = result(&outcome);
    assert_eq!(value["open"], json!("FileNotFoundError"));
    assert_eq!(value["write"], json!("FileNotFoundError"));
    assert_eq!(value["listdir"], json!("FileNotFoundError"));
    assert_eq!(value["connect"], json!("OSError"));
    assert_eq!(value["subprocess"], json!("OSError"));
    assert_eq!(value["thread"], json!("RuntimeError"));
    assert_eq!(value["environ"], json!({}));
    assert_eq!(value["input"], json!("EOFError"));
    assert_eq!(value["stdin"], json!(""));
}

#[tokio::test]
async fn executions_share_no_state() {
    let first = run(
        "import builtins, json, sys\nbuiltins.leak = 1\njson.dumps = None\nsys.modules['leak'] = 1\nglobal_leak = 1\nresult = 1",
    )
    .await;
    assert_eq!(result(&first), json!(1));
    let second = run(
        "import builtins, json, sys\nresult = [hasattr(builtins, 'leak'), json.dumps is None, 'leak' in sys.modules, 'global_leak' in globals()]",
    )
    .await;
    assert_eq!(result(&second), json!([false, false, false, false]));
}

#[tokio::test]
async fn every_execution_gets_fresh_entropy() {
    let code = "import random, os\nresult = [random.random(), random.Random().random(), os.urandom(16).hex()]";
    let a = result(&run(code).await);
    let b = result(&run(code).await);
    for i in 0..3 {
        assert_ne!(a[i], b[i], "value {i} repeated: {a} {b}");
    }
}

#[tokio::test]
async fn recursion_behaves_as_in_cpython() {
    let err = error(&run("def f(n):\n    return f(n + 1)\nf(0)").await).clone();
    assert_eq!(
        (err.kind, err.type_name.as_str()),
        (ErrorKind::PythonException, "RecursionError")
    );
    assert!(err.traceback.unwrap().contains("[Previous line repeated"));
    let cached = "import functools\n@functools.cache\ndef depth(n):\n    return 0 if n == 0 else depth(n - 1) + 1\n";
    assert_eq!(
        result(&run(&format!("{cached}result = depth(900)")).await),
        json!(900)
    );
    let err = error(&run(&format!("{cached}result = depth(5000)")).await).clone();
    assert_eq!(
        (err.kind, err.type_name.as_str()),
        (ErrorKind::PythonException, "RecursionError")
    );
}

#[tokio::test]
async fn clocks_work_and_are_coarse() {
    let code = "import time\na = time.monotonic_ns()\nb = time.time()\nresult = [a % 100_000, b > 1.7e9, time.monotonic_ns() >= a]";
    assert_eq!(result(&run(code).await), json!([0, true, true]));
}
