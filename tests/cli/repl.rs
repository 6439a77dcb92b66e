//! `pyexec repl` fed from a pipe: inputs are turns of one local session, expressions echo,
//! blocks continue to an empty line, errors leave the state, a limit starts afresh.

use super::helpers::{TestDir, pyexec_with_input};

#[test]
fn inputs_share_one_interpreter_and_expressions_print_their_value() {
    let dir = TestDir::new();
    let data_dir = dir.data_dir();
    let input = "import statistics\n\
                 xs = [1, 2, 6]\n\
                 statistics.mean(xs)\n\
                 def double(x):\n    return 2 * x\n\n\
                 double(21)\n\
                 totals = [x +\n 1 for x in xs]\n\
                 totals\n\
                 1 / 0\n\
                 'still', xs\n";
    let out = pyexec_with_input("repl", &["--data-dir", data_dir.to_str().unwrap()], input);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let printed: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(
        printed,
        ["3", "42", "[2, 3, 7]", "('still', [1, 2, 6])"],
        "{out:#?}"
    );
    assert!(
        out.stdout.starts_with("pyexec repl: rustpython 3."),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("ZeroDivisionError: division by zero"),
        "{out:#?}"
    );
    // History is kept in the data directory.
    let history = std::fs::read_to_string(data_dir.join("repl_history")).unwrap();
    assert!(history.contains("double(21)"), "{history}");
}

#[test]
fn a_limit_starts_a_fresh_interpreter() {
    let dir = TestDir::new();
    let input = "kept = 1\nwhile True: pass\n\n'kept' in globals()\n";
    let out = pyexec_with_input(
        "repl",
        &[
            "--data-dir",
            dir.data_dir().to_str().unwrap(),
            "--fuel",
            "100000000",
        ],
        input,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.contains("fuel_exhausted"), "{out:#?}");
    assert!(out.stderr.contains("starting a fresh one"), "{out:#?}");
    assert_eq!(out.stdout.lines().last(), Some("False"), "{out:#?}");
}

#[test]
fn an_unknown_runtime_is_refused() {
    let dir = TestDir::new();
    let out = pyexec_with_input(
        "repl",
        &[
            "--data-dir",
            dir.data_dir().to_str().unwrap(),
            "--runtime",
            "jython",
        ],
        "",
    );
    out.usage_error("unknown runtime \"jython\"");
}
