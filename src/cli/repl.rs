//! `pyexec repl`: an interactive Python prompt on a local session (no server, no key), with
//! line editing and history (rustyline, the line editor RustPython's own prompt uses).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::UsageError;
use super::run::print_human;
use super::sandbox_args::SandboxArgs;
use crate::api::ExecuteResponse;
use crate::sandbox::{
    Execution, OpenSession, Rejected, Sandbox, SandboxConfig, SessionConfig, TurnMode,
};

/// Start an interactive Python prompt in the sandbox, locally, without a server or an API key
///
/// Every input is a turn of one session: what it defines stays for the next, and an
/// expression's value is printed, as at Python's own prompt. A line ending in `:` starts a
/// block that an empty line ends; open brackets or quotes continue onto the next line. Limits
/// apply to each input; one the host enforces (fuel, time, memory, stack, output) stops the
/// interpreter, and a fresh one takes its place. History is kept in <DATA_DIR>/repl_history.
/// Ctrl-D (or end of input) quits.
#[derive(Debug, Args)]
#[command(mut_arg("workers", |arg| arg.hide(true)), mut_arg("queue", |arg| arg.hide(true)))]
pub struct ReplArgs {
    /// The runtime of the prompt (`pyexec runtime list`); the default when absent
    #[arg(long, value_name = "NAME")]
    pub runtime: Option<String>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// A local session outlives any prompt: no idle timeout or lifetime worth the name.
const LOCAL_SESSION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl ReplArgs {
    pub fn run(self, data_dir: &Path) -> anyhow::Result<ExitCode> {
        let config = SandboxConfig {
            workers: 1,
            sessions: SessionConfig {
                idle_timeout: LOCAL_SESSION,
                max_idle_timeout: LOCAL_SESSION,
                lifetime: LOCAL_SESSION,
                ..SessionConfig::default()
            },
            ..self.sandbox.config(data_dir)
        };
        let sandbox = Sandbox::new(config).context("loading the sandbox")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("starting the async runtime")?;
        let open = || {
            let request = OpenSession {
                runtime: self.runtime.clone(),
                ..OpenSession::default()
            };
            runtime
                .block_on(sandbox.open_session(request))
                .map_err(|rejected| match rejected {
                    Rejected::UnknownRuntime { .. } => UsageError(rejected.into()).into(),
                    _ => anyhow::Error::from(rejected).context("starting the interpreter"),
                })
        };
        let mut session = open()?;
        let mut editor = DefaultEditor::new().context("starting the line editor")?;
        let history = data_dir.join("repl_history");
        let _ = editor.load_history(&history);
        println!(
            "pyexec repl: {} {} in the sandbox; Ctrl-D quits",
            session.runtime,
            sandbox
                .runtimes()
                .iter()
                .find(|info| info.name == session.runtime)
                .map_or("", |info| info.python_version.as_str()),
        );
        while let Some(code) = read_input(&mut editor)? {
            let _ = editor.add_history_entry(code.trim_end());
            let execution = Execution {
                code,
                data: None,
                fuel: None,
                tenant: None,
                runtime: None,
            };
            let outcome = match sandbox.prepare_turn(&session.id, execution, TurnMode::Interactive)
            {
                Ok(prepared) => runtime.block_on(prepared.run()),
                Err(rejected) => {
                    eprintln!("{rejected}");
                    continue;
                }
            };
            let closed = outcome.session_closed;
            print_human(&ExecuteResponse::new(outcome, None)).context("writing the output")?;
            if closed {
                eprintln!(
                    "(the interpreter was stopped; starting a fresh one: earlier definitions are gone)"
                );
                session = open()?;
            }
        }
        let _ = std::fs::create_dir_all(data_dir)
            .and_then(|()| editor.save_history(&history).map_err(std::io::Error::other));
        Ok(ExitCode::SUCCESS)
    }
}

/// One input: a line, or the lines of a block or of an unfinished bracket or string. `None` at
/// the end of input.
fn read_input(editor: &mut DefaultEditor) -> anyhow::Result<Option<String>> {
    let mut code = String::new();
    loop {
        let prompt = if code.is_empty() { ">>> " } else { "... " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) if code.is_empty() => continue,
            Err(ReadlineError::Interrupted) => {
                code.clear();
                continue;
            }
            Err(ReadlineError::Eof) if code.is_empty() => return Ok(None),
            Err(ReadlineError::Eof) => return Ok(Some(code)),
            Err(error) => return Err(error).context("reading the input"),
        };
        if code.is_empty() && line.trim().is_empty() {
            continue;
        }
        let ends_block = line.trim().is_empty();
        code.push_str(&line);
        code.push('\n');
        if !continues(&code, ends_block) {
            return Ok(Some(code));
        }
    }
}

/// Whether `code` needs more lines: a block (its first line ends in `:`) until an empty line,
/// or open brackets, an open triple-quoted string or a trailing backslash.
fn continues(code: &str, ends_block: bool) -> bool {
    let first = code.lines().next().unwrap_or_default();
    let in_block = first
        .split('#')
        .next()
        .unwrap_or_default()
        .trim_end()
        .ends_with(':');
    if in_block {
        return !ends_block;
    }
    let mut depth = 0i32;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' | '"' => {
                let triple = match chars.next_if_eq(&c) {
                    // Two quotes: an empty string, or the start of three.
                    Some(_) if chars.next_if_eq(&c).is_none() => continue,
                    Some(_) => true,
                    None => false,
                };
                if !skip_string(&mut chars, c, triple) {
                    return triple;
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth > 0 || code.trim_end_matches('\n').ends_with('\\')
}

/// Skips the rest of a string opened with `quote` (three of them when `triple`); whether it
/// closed.
fn skip_string(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    quote: char,
    triple: bool,
) -> bool {
    let mut closing = 0;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
                closing = 0;
            }
            c if c == quote => {
                closing += 1;
                if !triple || closing == 3 {
                    return true;
                }
            }
            '\n' if !triple => return true,
            _ => closing = 0,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::continues;

    #[test]
    fn blocks_brackets_and_strings_continue_and_the_rest_does_not() {
        assert!(!continues("x = 1\n", false));
        assert!(continues("def f():\n", false));
        assert!(continues("def f():\n    return 1\n", false));
        assert!(!continues("def f():\n    return 1\n\n", true));
        assert!(continues("xs = [1,\n", false));
        assert!(!continues("xs = [1,\n 2]\n", false));
        assert!(!continues("s = '(' # [\n", false));
        assert!(continues("s = '''a\n", false));
        assert!(!continues("s = '''a\n'''\n", false));
        assert!(continues("x = 1 + \\\n", false));
        assert!(!continues("print(\"a\\\"(\")\n", false));
        assert!(!continues("f('', \"\")\n", false));
    }
}
