//! `pyexec run`: one execution in a local sandbox, without a server or an API key, for trying
//! snippets and for scripts. Its `--json` output is the API's own envelope.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::value::RawValue;

use super::UsageError;
use super::sandbox_args::SandboxArgs;
use crate::api::ExecuteResponse;
use crate::sandbox::{Execution, Image, Rejected, Sandbox, SandboxConfig};

/// Run Python code once in the sandbox, locally, without a server or an API key
///
/// Prints what the code printed, then its `result` as pretty JSON (nothing when it is null).
/// When the code fails, prints its traceback (or, for a limit, `kind: message`) on stderr.
/// Exit code: 0 on success, 1 when the code raised or hit a limit, 2 on bad usage.
// One execution needs one worker and no queue: their settings (and environment variables, which
// may be set for `serve`) are accepted but not shown.
#[derive(Debug, Args)]
#[command(mut_arg("workers", |arg| arg.hide(true)), mut_arg("queue", |arg| arg.hide(true)))]
pub struct RunArgs {
    /// The Python file to run; `-` or nothing reads the code from stdin
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// JSON object bound to the global `data`: inline, or `@FILE` to read it from a file
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: Option<String>,

    /// The runtime to run the code in (`GET /runtimes` lists them); the default when absent
    #[arg(long, value_name = "NAME")]
    pub runtime: Option<String>,

    /// Print the JSON envelope `POST /execute` answers with (less `executions_left`: no key)
    #[arg(long)]
    pub json: bool,

    /// Write the figures the code leaves open (CPython's matplotlib) into DIR as image-1.png,
    /// image-2.png, …; without it, how many there were is noted on stderr
    #[arg(long, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

impl RunArgs {
    pub fn run(self, data_dir: &Path) -> anyhow::Result<ExitCode> {
        let limit = self.sandbox.input_bytes;
        let code = self.code(limit).map_err(UsageError)?;
        let data = self
            .data
            .as_deref()
            .map(|data| parse_data(data, limit))
            .transpose()
            .map_err(UsageError)?;

        let config = SandboxConfig {
            workers: 1,
            ..self.sandbox.config(data_dir)
        };
        let sandbox = Sandbox::new(config).context("loading the sandbox")?;
        let prepared = sandbox
            .prepare(Execution {
                code,
                data,
                fuel: None,
                tenant: None,
                runtime: self.runtime,
            })
            .map_err(|rejected| match rejected {
                Rejected::InputTooLarge { .. }
                | Rejected::DataTooDeep { .. }
                | Rejected::UnknownRuntime { .. } => UsageError(rejected.into()).into(),
                _ => anyhow::Error::from(rejected),
            })?;
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("starting the async runtime")?
            .block_on(prepared.run());

        let response = ExecuteResponse::new(outcome, None);
        if let Some(dir) = &self.images_dir {
            write_images(dir, &response.images)?;
        }
        let written = if self.json {
            writeln!(io::stdout().lock(), "{}", serde_json::to_string(&response)?)
        } else {
            print_human(&response)
        };
        written.context("writing the output")?;
        if self.images_dir.is_none() && !self.json && !response.images.is_empty() {
            eprintln!(
                "({} image(s) drawn; --images-dir DIR writes them as PNG files)",
                response.images.len()
            );
        }
        Ok(if response.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// The code from FILE, or from stdin for `-` or no FILE.
    fn code(&self, limit: usize) -> anyhow::Result<String> {
        match &self.file {
            Some(path) if path.as_os_str() != "-" => read_text(path, limit),
            _ => read_bounded(io::stdin().lock(), limit)
                .and_then(|bytes| Ok(String::from_utf8(bytes)?))
                .context("reading the code from stdin"),
        }
    }
}

/// `--data`: inline JSON or `@FILE`, which must be a JSON object, kept as written so numbers
/// stay exact.
fn parse_data(data: &str, limit: usize) -> anyhow::Result<Box<RawValue>> {
    let text = match data.strip_prefix('@') {
        Some(path) => read_text(Path::new(path), limit).context("--data")?,
        None => data.to_owned(),
    };
    let raw: Box<RawValue> = serde_json::from_str(&text).context("--data is not valid JSON")?;
    anyhow::ensure!(
        raw.get().starts_with('{'),
        "--data must be a JSON object, like the API's `data`"
    );
    Ok(raw)
}

/// The UTF-8 text of the file at `path`, refusing more than `limit` bytes.
fn read_text(path: &Path, limit: usize) -> anyhow::Result<String> {
    std::fs::File::open(path)
        .map_err(anyhow::Error::from)
        .and_then(|file| read_bounded(file, limit))
        .and_then(|bytes| Ok(String::from_utf8(bytes)?))
        .with_context(|| format!("reading {}", path.display()))
}

/// Reads all of `reader`, refusing more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() <= limit,
        "larger than the input limit of {limit} bytes (--input-bytes)"
    );
    Ok(bytes)
}

/// Writes `images` into `dir` as image-1.png, image-2.png, …
fn write_images(dir: &Path, images: &[Image]) -> anyhow::Result<()> {
    use base64::Engine;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (n, image) in images.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&image.data)
            .context("an image the guest sent is not base64")?;
        let path = dir.join(format!("image-{}.{}", n + 1, image.format));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The code's stdout, then its result; its stderr, then the error, on stderr.
pub(super) fn print_human(response: &ExecuteResponse) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(response.stdout.as_bytes())?;
    let mut stderr = io::stderr().lock();
    stderr.write_all(response.stderr.as_bytes())?;
    if let Some(result) = response.result.as_deref().filter(|r| r.get() != "null") {
        if !response.stdout.is_empty() && !response.stdout.ends_with('\n') {
            writeln!(stdout)?;
        }
        writeln!(stdout, "{}", pretty(result.get()))?;
    }
    if let Some(error) = &response.error {
        if !response.stderr.is_empty() && !response.stderr.ends_with('\n') {
            writeln!(stderr)?;
        }
        match &error.traceback {
            Some(traceback) => writeln!(stderr, "{}", traceback.trim_end())?,
            None => writeln!(stderr, "{}: {}", error.kind.as_str(), error.message)?,
        }
    }
    stdout.flush()
}

/// Re-indents JSON text two spaces a level, like `serde_json::to_string_pretty`, without
/// parsing numbers (so `3.0` and big integers print exactly as the code produced them).
fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                if chars.peek().is_some_and(|next| matches!(next, '}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn pretty_indents_like_serde_json_and_keeps_numbers_as_written() {
        let compact = r#"{"a":[1,{"b":"x, y: {\"z\"} [\\"},[],{ }],"big":123456789012345678901234567890,"n":3.0}"#;
        let expected = r#"{
  "a": [
    1,
    {
      "b": "x, y: {\"z\"} [\\"
    },
    [],
    {}
  ],
  "big": 123456789012345678901234567890,
  "n": 3.0
}"#;
        assert_eq!(pretty(compact), expected);
        assert_eq!(pretty(expected), expected);
        assert_eq!(pretty("3.0"), "3.0");
    }
}
