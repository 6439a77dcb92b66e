//! `--help` of the `keys` commands documents every command and option.

use crate::helpers::{pyexec, run};

#[test]
fn keys_help_lists_every_subcommand() {
    let out = run(pyexec().args(["keys", "--help"])).success();
    for sub in [
        "add",
        "list",
        "show",
        "reset-executions",
        "update-limit",
        "update-sessions",
        "revoke",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("control socket"));
    assert!(out.stdout.contains("--data-dir"));
}

#[test]
fn each_subcommand_documents_its_arguments() {
    let cases: &[(&str, &[&str])] = &[
        (
            "add",
            &[
                "--name <NAME>",
                "--description <DESCRIPTION>",
                "--env <ENV>",
                "--executions-limit <N>",
                "--rate-limit-per-minute <N>",
                "--fuel-limit <FUEL>",
                "--max-sessions <N>",
                "--json",
                "--data-dir <DIR>",
                "shown only this once",
                "[default: 60]",
                "test:",
                "prod:",
            ],
        ),
        ("list", &["--json", "--data-dir <DIR>"]),
        ("show", &["<KEY>", "sk_test_AbCd1234", "--json"]),
        ("reset-executions", &["<KEY>", "--json"]),
        ("update-limit", &["<KEY>", "<N>", "--json"]),
        ("update-sessions", &["<KEY>", "<N|default>", "--json"]),
        ("revoke", &["<KEY>", "--json", "cannot be undone"]),
    ];
    for (sub, expected) in cases {
        let out = run(pyexec().args(["keys", sub, "--help"])).success();
        for text in *expected {
            assert!(
                out.stdout.contains(text),
                "`keys {sub} --help` lacks {text:?}:\n{}",
                out.stdout
            );
        }
        // Every option line is followed by a description (long help puts it on the next line).
        let lines: Vec<&str> = out.stdout.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("--") || line.trim_start().starts_with('<') {
                let described = line.trim().contains("  ")
                    || lines.get(i + 1).is_some_and(|next| !next.trim().is_empty());
                assert!(
                    described,
                    "`keys {sub} --help`: {line:?} has no description"
                );
            }
        }
    }
}

#[test]
fn data_dir_help_names_the_environment_variable() {
    let out = run(pyexec().arg("--help")).success();
    assert!(out.stdout.contains("PYEXEC_DATA_DIR"), "{}", out.stdout);
    assert!(out.stdout.contains("[default: data]"), "{}", out.stdout);
}
