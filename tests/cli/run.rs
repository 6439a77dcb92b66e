//! `pyexec run`: code from a file or stdin, `--data` inline or from a file, human and `--json`
//! output, and the exit codes 0 (success), 1 (the code failed) and 2 (bad usage).

use serde_json::json;

use super::helpers::{Run, TestDir, pyexec, pyexec_with_input};
use super::server::Server;

const MEAN: &str = "result = sum(data['numbers']) / len(data['numbers'])";
const NUMBERS: &str = r#"{"numbers": [1, 2, 3, 4, 5]}"#;

/// `pyexec run ARGS…` (sharing the compiled module), with `stdin` as its standard input.
fn pyexec_run(args: &[&str], stdin: impl AsRef<[u8]>) -> Run {
    pyexec_with_input("run", args, stdin)
}

fn write(dir: &TestDir, name: &str, contents: impl AsRef<[u8]>) -> String {
    let path = dir.root().join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_file_runs_and_prints_its_stdout_then_its_result() {
    let dir = TestDir::new();
    let script = write(
        &dir,
        "mean.py",
        format!(
            "print('mean of', len(data['numbers']))\n{MEAN}\nresult = {{'mean': result, 'big': 2**100}}\n"
        ),
    );
    let out = pyexec_run(&[&script, "--data", NUMBERS], "").success();
    assert_eq!(
        out.stdout,
        "mean of 5\n{\n  \"mean\": 3.0,\n  \"big\": 1267650600228229401496703205376\n}\n"
    );
}

#[test]
fn code_comes_from_stdin_with_a_dash_or_no_file() {
    for args in [&["-"][..], &[]] {
        let out = pyexec_run(args, "print('hi', end='')\nresult = [1, 'two']").success();
        assert_eq!(out.stdout, "hi\n[\n  1,\n  \"two\"\n]\n", "{args:?}");
        // No result, no result line: a script that only prints behaves like `python`.
        let out = pyexec_run(args, "print('only this')").success();
        assert_eq!(out.stdout, "only this\n", "{args:?}");
    }
}

#[test]
fn data_comes_from_a_file_with_numbers_kept_exact() {
    let dir = TestDir::new();
    let data = write(
        &dir,
        "data.json",
        r#"{"n": 123456789012345678901234567890, "x": 0.1}"#,
    );
    let out = pyexec_run(
        &["--data", &format!("@{data}")],
        "result = [data['n'] + 1, data['x']]",
    )
    .success();
    assert_eq!(
        out.stdout,
        "[\n  123456789012345678901234567891,\n  0.1\n]\n"
    );
}

#[test]
fn a_python_error_exits_1_with_its_traceback_on_stderr() {
    let code = "def f(x):\n    return 1 / x\nprint('before')\nf(0)\n";
    let out = pyexec_run(&[], code);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "before\n");
    assert!(
        out.stderr
            .starts_with("Traceback (most recent call last):\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("line 2, in f\n    return 1 / x\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with("ZeroDivisionError: division by zero\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_limit_exits_1_with_its_kind_and_message() {
    let out = pyexec_run(&["--fuel", "1000000"], "while True: pass");
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with("fuel_exhausted: ") && out.stderr.contains("1000000"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let out = pyexec_run(&["--timeout", "0.3"], "import time\ntime.sleep(5)");
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.starts_with("timeout: "), "{}", out.stderr);
}

/// `--json` prints byte for byte what `POST /execute` answers, less `executions_left`.
#[tokio::test]
async fn json_prints_the_api_envelope() {
    let dir = TestDir::new();
    let (key, _) = dir.add_key("test", 10);
    let server = Server::start(&dir.data_dir());
    let client = reqwest::Client::new();
    let cases = [
        (MEAN.to_owned(), Some(NUMBERS), Some(0)),
        (
            "print('out')\nimport sys\nprint('err', file=sys.stderr)\nresult = {'n': 2**70}"
                .to_owned(),
            None,
            Some(0),
        ),
        ("x = 1\nraise ValueError('bad')".to_owned(), None, Some(1)),
        ("def f(:\n  pass".to_owned(), None, Some(1)),
    ];
    for (code, data, exit) in cases {
        let body = match data {
            Some(data) => format!(r#"{{"code": {}, "data": {data}}}"#, json!(code)),
            None => format!(r#"{{"code": {}}}"#, json!(code)),
        };
        let api = client
            .post(format!("{}/execute", server.base))
            .header("X-API-Key", &key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut args = vec!["--json"];
        if let Some(data) = data {
            args.extend(["--data", data]);
        }
        let out = tokio::task::spawn_blocking({
            let code = code.clone();
            move || pyexec_run(&args, &code)
        })
        .await
        .unwrap();
        assert_eq!(out.code, exit, "{code}: {out:#?}");
        assert_eq!(out.stderr, "", "{code}");
        assert_eq!(
            without_run_specifics(out.stdout.trim_end()),
            without_run_specifics(&api),
            "{code}"
        );
        assert!(!out.stdout.contains("executions_left"), "{}", out.stdout);
        assert!(api.contains("\"executions_left\":"), "{api}");
    }
}

/// The envelope without `executions_left` and with `duration_ms` blanked: the two things that
/// differ between two runs of the same code, one through the API and one local.
fn without_run_specifics(envelope: &str) -> String {
    let value = |name: &str| {
        let start = envelope.find(&format!("\"{name}\":"))?;
        let end = envelope[start..].find([',', '}']).map(|end| start + end)?;
        Some(start..end)
    };
    let mut text = envelope.to_owned();
    if let Some(range) = value("duration_ms") {
        text.replace_range(range, "\"duration_ms\":_");
    }
    if let Some(range) = value("executions_left") {
        text.replace_range(range.start..range.end + 1, "");
    }
    text
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let dir = TestDir::new();
    let script = write(&dir, "mean.py", MEAN);
    let latin1 = write(&dir, "latin1.py", b"result = '\xe9'\n");
    let list = write(&dir, "list.json", "[1, 2]");
    let missing = dir.root().join("missing.py");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &[u8], &str)] = &[
        (&[missing], b"", "missing.py: No such file"),
        (&[&latin1], b"", "latin1.py: invalid utf-8"),
        (
            &["-"],
            b"\xff\xfe",
            "reading the code from stdin: invalid utf-8",
        ),
        (
            &[&script, "--data", "{bad"],
            b"",
            "--data is not valid JSON",
        ),
        (
            &[&script, "--data", "[1, 2]"],
            b"",
            "--data must be a JSON object",
        ),
        (
            &[&script, "--data", &format!("@{list}")],
            b"",
            "--data must be a JSON object",
        ),
        (
            &[&script, "--data", &format!("@{missing}")],
            b"",
            "missing.py: No such file",
        ),
        (
            &[&script, "--input-bytes", "10"],
            b"",
            "larger than the input limit of 10 bytes",
        ),
        (
            &["--input-bytes", "10"],
            b"result = 12345678",
            "larger than the input limit of 10 bytes",
        ),
        (
            &[&script, "--input-bytes", "60", "--data", NUMBERS],
            b"",
            "more than the limit of 60 bytes",
        ),
    ];
    for (args, stdin, expected) in cases {
        pyexec_run(args, stdin).usage_error(expected);
    }
    // clap's own usage errors exit 2 as well.
    assert_eq!(pyexec_run(&["--fuel", "lots"], b"").code, Some(2));
}

#[test]
fn data_past_the_nesting_limit_is_bad_usage() {
    let limit = pyexec::sandbox::MAX_DATA_DEPTH;
    for (open, close) in [("[", "]"), (r#"{"k": "#, "}")] {
        // `data`'s own object is the first level.
        let data = |depth: usize| {
            format!(
                r#"{{"d": {}1{}}}"#,
                open.repeat(depth - 1),
                close.repeat(depth - 1)
            )
        };
        let out = pyexec_run(&["--data", &data(limit)], "result = 1").success();
        assert_eq!(out.stdout, "1\n");
        pyexec_run(&["--data", &data(limit + 1)], "result = 1")
            .usage_error(&format!("the nesting limit is {limit} levels"));
    }
}

#[test]
fn a_guest_panic_is_logged_and_answered_internal_without_its_text() {
    // A code object whose bytecode was replaced panics RustPython.
    let code = "print('before')\ndef f():\n    return 1\ng = type(f)(f.__code__.replace(co_code=b'\\xff' * 16), {})\ng()";
    let out = pyexec_run(&["--json"], code);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let reply = out.json();
    assert_eq!(
        (&reply["error"]["kind"], &reply["stdout"], &reply["stderr"]),
        (&json!("internal"), &json!(""), &json!("")),
        "{reply}"
    );
    assert!(!out.stdout.contains("panicked"), "{out:#?}");
    // The log (stderr) has the panic's text.
    assert!(
        out.stderr.contains("the guest panicked") && out.stderr.contains("panicked at"),
        "{out:#?}"
    );
}

#[test]
fn help_documents_input_output_and_exit_codes() {
    let out = super::helpers::run(pyexec().args(["run", "--help"])).success();
    for text in [
        "[FILE]",
        "--data <JSON|@FILE>",
        "--json",
        "--fuel <UNITS>",
        "--timeout <SECONDS>",
        "1 when the code raised or hit a limit, 2 on bad usage",
    ] {
        assert!(out.stdout.contains(text), "no {text:?}:\n{}", out.stdout);
    }
    // One execution, one worker: the server's sizing flags are not offered.
    assert!(!out.stdout.contains("--workers"), "{}", out.stdout);
    assert!(!out.stdout.contains("--queue"), "{}", out.stdout);
}

#[test]
fn runtime_selects_the_runtime_and_the_json_envelope_names_it() {
    for args in [&["--json"][..], &["--json", "--runtime", "rustpython"]] {
        let out = pyexec_run(args, "import sys\nresult = sys.implementation.name").success();
        let envelope: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            (&envelope["result"], &envelope["runtime"]),
            (&json!("rustpython"), &json!("rustpython")),
            "{args:?}"
        );
    }
}

#[test]
fn an_unknown_runtime_is_a_usage_error_listing_the_runtimes() {
    let out = pyexec_run(&["--runtime", "cpython-9"], "result = 1");
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("unknown runtime \"cpython-9\"")
            && out.stderr.contains("available: rustpython"),
        "{}",
        out.stderr
    );
}
