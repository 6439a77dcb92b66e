//! `pyexec completions`: a script per shell that names every subcommand and that the shell
//! itself accepts.

use std::process::Command;

use super::helpers::{pyexec, run};

/// Checks `script` with `shell`'s own parser (`shell FLAG FILE`); zsh and fish only when
/// installed, bash always.
fn check_syntax(shell: &str, flag: &str, script: &str) {
    if shell != "bash" && Command::new(shell).arg("--version").output().is_err() {
        eprintln!("{shell} is not installed: skipping its syntax check");
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let checked = Command::new(shell)
        .arg(flag)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{shell} {flag} rejects the script: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn each_shell_gets_a_script_naming_every_subcommand_that_it_accepts() {
    for (shell, flag) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        let out = run(pyexec().args(["completions", shell])).success();
        for word in [
            "serve",
            "run",
            "keys",
            "reset-executions",
            "completions",
            "data-dir",
        ] {
            assert!(out.stdout.contains(word), "{shell}: no {word:?}");
        }
        check_syntax(shell, flag, &out.stdout);
    }
}

/// Bash, given the script, really completes: subcommands, then a subcommand's options.
#[test]
fn bash_completes_subcommands_and_options() {
    let out = run(pyexec().args(["completions", "bash"])).success();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &out.stdout).unwrap();
    let complete = |words: &str| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _pyexec pyexec \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[*]}}\"",
            file.path().display()
        );
        let output = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(complete("pyexec r"), "run repl runtime");
    assert_eq!(complete("pyexec runtime i"), "install");
    assert_eq!(complete("pyexec keys re"), "reset-executions revoke");
    assert_eq!(complete("pyexec run --da"), "--data --data-dir");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = run(pyexec().args(["completions", "tcsh"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("possible values"), "{}", out.stderr);
}
