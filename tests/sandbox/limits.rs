//! Every limit, hit by a real guest run; the next execution is unaffected.

use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::value::RawValue;

use super::{error, execution, result, run, run_with, sandbox, test_limits};
use pyexec::sandbox::{ErrorKind, Execution, MAX_DATA_DEPTH, Rejected};

/// The sandbox still works after whatever the previous execution did.
async fn assert_healthy() {
    assert_eq!(result(&run("result = 40 + 2").await), json!(42));
}

#[tokio::test]
async fn an_endless_loop_exhausts_its_fuel() {
    let outcome = run("while True: pass").await;
    let err = error(&outcome);
    assert_eq!(err.kind, ErrorKind::FuelExhausted);
    assert_eq!(outcome.fuel_used, test_limits().fuel);
    assert_healthy().await;
}

#[tokio::test]
async fn a_key_fuel_limit_overrides_the_default() {
    let code = "total = 0\nfor i in range(200_000):\n    total += i\nresult = total";
    let generous = sandbox().execute(execution(code)).await.unwrap();
    assert_eq!(result(&generous), json!(19_999_900_000u64));
    let stingy = sandbox()
        .execute(Execution {
            fuel: Some(5_000_000),
            ..execution(code)
        })
        .await
        .unwrap();
    assert_eq!(error(&stingy).kind, ErrorKind::FuelExhausted);
    assert_eq!(stingy.fuel_used, 5_000_000);
}

#[tokio::test]
async fn sleeping_past_the_deadline_times_out() {
    let started = Instant::now();
    let outcome = run("import time\nprint('sleeping')\ntime.sleep(1000)").await;
    let elapsed = started.elapsed();
    assert_eq!(error(&outcome).kind, ErrorKind::Timeout);
    assert_eq!(outcome.stdout, "sleeping\n");
    let timeout = test_limits().timeout;
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_healthy().await;
}

#[tokio::test]
async fn short_sleeps_sleep() {
    let outcome =
        run("import time\na = time.monotonic()\ntime.sleep(0.2)\nresult = time.monotonic() - a")
            .await;
    let slept = result(&outcome).as_f64().unwrap();
    assert!((0.2..0.5).contains(&slept), "{slept}");
}

#[tokio::test]
async fn huge_allocations_fail_cleanly() {
    for code in [
        "x = 'a' * 10**10",
        "x = [0] * 10**9",
        "x = bytearray(2**31)",
        "x = 10**10**10",
    ] {
        let outcome = run(code).await;
        let err = error(&outcome);
        assert!(
            matches!(
                err.kind,
                ErrorKind::MemoryLimit | ErrorKind::PythonException | ErrorKind::FuelExhausted
            ),
            "{code}: {err:?}"
        );
    }
    assert_healthy().await;
}

#[tokio::test]
async fn growing_past_the_memory_limit_is_a_memory_limit() {
    let outcome = run("chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))").await;
    let err = error(&outcome);
    assert_eq!(err.kind, ErrorKind::MemoryLimit, "{err:?}");
    assert_healthy().await;
}

#[tokio::test]
async fn recursion_past_the_wasm_stack_is_a_stack_overflow() {
    let deep_calls = [
        // Through a native wrapper, with Python's own limit lifted.
        "import sys, functools\nsys.setrecursionlimit(10**6)\n@functools.cache\ndef f(n):\n    return 0 if n == 0 else f(n - 1) + 1\nf(100_000)",
        "import sys\nsys.setrecursionlimit(10**6)\nclass A:\n    def __repr__(self):\n        return repr(A())\nrepr(A())",
        "import json\njson.loads('[' * 100_000 + ']' * 100_000)",
    ];
    for code in deep_calls {
        let outcome = run(code).await;
        assert_eq!(error(&outcome).kind, ErrorKind::StackOverflow, "{code}");
        assert_healthy().await;
    }
}

#[tokio::test]
async fn plain_deep_recursion_with_a_lifted_limit_stays_bounded() {
    // RustPython keeps Python-to-Python calls off the native stack: this runs until fuel ends.
    let outcome =
        run("import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)").await;
    let err = error(&outcome);
    assert!(
        matches!(
            err.kind,
            ErrorKind::FuelExhausted | ErrorKind::MemoryLimit | ErrorKind::StackOverflow
        ),
        "{err:?}"
    );
    assert_healthy().await;
}

#[tokio::test]
async fn errors_with_huge_messages_stay_errors() {
    let outcome = run("x = eval('[' * 10**5 + ']' * 10**5)").await;
    let err = error(&outcome);
    assert!(
        matches!(
            err.kind,
            ErrorKind::SyntaxError | ErrorKind::StackOverflow | ErrorKind::PythonException
        ),
        "{err:?}"
    );
    let outcome = run("raise ValueError('x' * 10**6)").await;
    let err = error(&outcome);
    assert_eq!(
        (err.kind, err.type_name.as_str()),
        (ErrorKind::PythonException, "ValueError")
    );
    assert!(err.message.len() < 5000 && err.message.ends_with("… (truncated)"));
}

#[tokio::test]
async fn a_print_flood_keeps_output_up_to_the_limit() {
    let outcome = run("while True:\n    print('x' * 99)").await;
    assert_eq!(error(&outcome).kind, ErrorKind::OutputLimit);
    let limit = test_limits().output_bytes;
    assert_eq!(outcome.stdout.len(), limit);
    assert!(outcome.stdout.starts_with(&format!("{}\n", "x".repeat(99))));
    assert_healthy().await;
}

#[tokio::test]
async fn stdout_and_stderr_share_the_output_limit() {
    let outcome = run(
        "import sys\nwhile True:\n    print('o' * 1000)\n    print('e' * 1000, file=sys.stderr)",
    )
    .await;
    assert_eq!(error(&outcome).kind, ErrorKind::OutputLimit);
    assert_eq!(
        outcome.stdout.len() + outcome.stderr.len(),
        test_limits().output_bytes
    );
    assert!(!outcome.stderr.is_empty());
}

#[tokio::test]
async fn invalid_utf8_output_is_replaced_not_fatal() {
    let outcome = run("import os\nos.write(1, b'ok \\xff\\xfe end')\nresult = 1").await;
    assert_eq!(outcome.stdout, "ok \u{fffd}\u{fffd} end");
    assert_eq!(result(&outcome), json!(1));
}

#[tokio::test]
async fn an_oversized_result_is_an_output_limit() {
    let outcome = run("result = 'x' * (1 << 20)").await;
    assert_eq!(error(&outcome).kind, ErrorKind::OutputLimit);
}

#[tokio::test]
async fn oversized_input_is_rejected_before_running() {
    let code = format!("# {}\nresult = 1", "x".repeat(test_limits().input_bytes));
    let rejected = sandbox().execute(execution(code)).await.unwrap_err();
    assert!(
        matches!(rejected, Rejected::InputTooLarge { .. }),
        "{rejected:?}"
    );
}

/// `{"d": …}` with arrays (or objects under the key `k`) nesting `depth` levels in all.
fn nested_data(depth: usize, arrays: bool) -> String {
    let (open, close) = if arrays {
        ("[", "]")
    } else {
        (r#"{"k": "#, "}")
    };
    format!(
        r#"{{"d": {}1{}}}"#,
        open.repeat(depth - 1),
        close.repeat(depth - 1)
    )
}

#[tokio::test]
async fn data_nested_to_the_limit_runs_and_one_level_more_is_rejected_before_running() {
    let count_levels = "depth, x = 1, data['d']
while isinstance(x, (list, dict)):
    depth, x = depth + 1, (x[0] if isinstance(x, list) else x['k'])
result = depth";
    for arrays in [true, false] {
        let outcome = run_with(count_levels, &nested_data(MAX_DATA_DEPTH, arrays)).await;
        assert_eq!(result(&outcome), json!(MAX_DATA_DEPTH), "arrays: {arrays}");
        let data = RawValue::from_string(nested_data(MAX_DATA_DEPTH + 1, arrays)).unwrap();
        let rejected = sandbox()
            .execute(Execution {
                data: Some(data),
                ..execution(count_levels)
            })
            .await
            .unwrap_err();
        assert_eq!(
            rejected,
            Rejected::DataTooDeep {
                limit: MAX_DATA_DEPTH
            }
        );
    }
}
