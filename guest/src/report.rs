//! Turns a Python exception into the reply's `error` object: a stable `kind`, the exception's
//! type name and message, the line in the user's code, and a traceback of user frames only.

use rustpython_vm::{
    builtins::{PyBaseException, PyBaseExceptionRef, PyInt, PyStr, PyTraceback},
    AsObject, PyObjectRef, PyRef, VirtualMachine,
};
use serde::Serialize;

use crate::USER_FILENAME;

/// Identical consecutive traceback entries past this many are folded, as CPython does.
const REPEATED_FRAMES_SHOWN: usize = 3;
/// Exceptions of a `__cause__`/`__context__` chain shown at most.
const MAX_CHAINED_EXCEPTIONS: usize = 8;
/// Characters of a message kept in a report; an exception can carry megabytes.
const MAX_MESSAGE_CHARS: usize = 4096;
/// Characters of a source line quoted in a traceback.
const MAX_SOURCE_LINE_CHARS: usize = 200;

/// The `error` object of a reply.
#[derive(Serialize)]
pub struct ErrorReport {
    /// Stable, machine-readable category (`python_exception`, `syntax_error`, …).
    kind: &'static str,
    /// The exception's type name, e.g. `ZeroDivisionError`.
    #[serde(rename = "type")]
    type_name: String,
    message: String,
    /// 1-based line of the user's code the error points at, if any.
    line: Option<usize>,
    /// CPython-style traceback restricted to the user's code.
    traceback: Option<String>,
}

impl ErrorReport {
    pub fn plain(kind: &'static str, type_name: &str, message: String) -> Self {
        Self {
            kind,
            type_name: type_name.to_owned(),
            message,
            line: None,
            traceback: None,
        }
    }

    /// A failure of the harness itself rather than of the user's code.
    pub fn internal(vm: &VirtualMachine, exc: &PyBaseExceptionRef) -> Self {
        let mut report = Self::from_exception(vm, exc, "");
        report.kind = "internal";
        report
    }

    pub fn from_exception(vm: &VirtualMachine, exc: &PyBaseExceptionRef, source: &str) -> Self {
        let class = exc.class();
        let exceptions = &vm.ctx.exceptions;
        let type_name = class.name().to_string();
        if class.fast_issubclass(exceptions.syntax_error) {
            return Self::syntax_error(vm, exc, type_name);
        }
        let kind = if class.fast_issubclass(exceptions.system_exit) {
            "system_exit"
        } else if class.fast_issubclass(exceptions.memory_error) {
            "memory_limit"
        } else {
            "python_exception"
        };
        let frames = user_frames(vm, exc);
        let line = frames.last().map(|frame| frame.line);
        Self {
            kind,
            message: exception_message(vm, exc),
            type_name,
            line,
            traceback: Some(format_chain(vm, exc, source)),
        }
    }

    fn syntax_error(vm: &VirtualMachine, exc: &PyBaseExceptionRef, type_name: String) -> Self {
        let attr = |name: &'static str| {
            exc.as_object()
                .get_attr(name, vm)
                .ok()
                .filter(|v| !vm.is_none(v))
        };
        let message = attr("msg")
            .and_then(|m| {
                m.downcast_ref::<PyStr>()
                    .map(|s| truncate(&s.to_string(), MAX_MESSAGE_CHARS))
            })
            .unwrap_or_else(|| exception_message(vm, exc));
        let line = attr("lineno").and_then(|l| as_usize(&l));
        let mut traceback = format!("  File \"{USER_FILENAME}\"");
        if let Some(line) = line {
            traceback.push_str(&format!(", line {line}"));
        }
        traceback.push('\n');
        if let Some(text) =
            attr("text").and_then(|t| t.downcast_ref::<PyStr>().map(|s| s.to_string()))
        {
            let trimmed = text.trim_end_matches(['\n', '\r']);
            let indent = trimmed.len() - trimmed.trim_start().len();
            let quoted = truncate(trimmed.trim_start(), MAX_SOURCE_LINE_CHARS);
            traceback.push_str(&format!("    {quoted}\n"));
            if let Some(offset) = attr("offset")
                .and_then(|o| as_usize(&o))
                .filter(|&offset| offset <= MAX_SOURCE_LINE_CHARS)
            {
                let caret_at = offset.saturating_sub(1).saturating_sub(indent);
                traceback.push_str(&format!("    {}^\n", " ".repeat(caret_at)));
            }
        }
        traceback.push_str(&format!("{type_name}: {message}"));
        Self {
            kind: "syntax_error",
            type_name,
            message,
            line,
            traceback: Some(traceback),
        }
    }

    /// The reply document for this failure.
    pub fn to_reply(&self) -> String {
        let error = serde_json::to_string(self).expect("an error report serialises");
        format!(r#"{{"ok":false,"error":{error}}}"#)
    }
}

/// `str(exc)`, which may run user code (`__str__`); a failure there must not lose the report.
fn exception_message(vm: &VirtualMachine, exc: &PyBaseExceptionRef) -> String {
    match exc.as_object().str(vm) {
        // RustPython leaves a trailing space on some messages ("maximum recursion depth
        // exceeded ").
        Ok(s) => truncate(s.to_string().trim_end(), MAX_MESSAGE_CHARS),
        Err(_) => "<exception str() failed>".to_owned(),
    }
}

/// `text` cut to `max` characters, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… (truncated)", &text[..cut]),
        None => text.to_owned(),
    }
}

fn as_usize(obj: &PyObjectRef) -> Option<usize> {
    obj.downcast_ref::<PyInt>()
        .and_then(|i| usize::try_from(i.as_bigint()).ok())
}

/// One traceback entry in the user's code.
#[derive(PartialEq)]
struct Frame {
    line: usize,
    function: String,
}

/// The traceback entries of `exc` that are in the user's code, outermost first.
fn user_frames(vm: &VirtualMachine, exc: &PyBaseExceptionRef) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut next: Option<PyRef<PyTraceback>> = exc.traceback();
    // A traceback chain can be edited from Python; bound the walk.
    let mut budget = 100_000;
    while let Some(tb) = next {
        budget -= 1;
        if budget == 0 {
            break;
        }
        let code = tb
            .as_object()
            .get_attr("tb_frame", vm)
            .and_then(|frame| frame.get_attr("f_code", vm));
        if let Ok(code) = code {
            let filename = code.get_attr("co_filename", vm).ok();
            let in_user_code = filename
                .as_ref()
                .and_then(|f| f.downcast_ref::<PyStr>())
                .is_some_and(|f| f.as_wtf8() == USER_FILENAME);
            if in_user_code {
                let function = code
                    .get_attr("co_name", vm)
                    .ok()
                    .and_then(|n| n.downcast_ref::<PyStr>().map(|s| s.to_string()))
                    .unwrap_or_default();
                frames.push(Frame {
                    line: tb.lineno.get(),
                    function,
                });
            }
        }
        next = tb.next.lock().clone();
    }
    frames
}

/// The whole traceback, with chained exceptions before the one that ended the run.
fn format_chain(vm: &VirtualMachine, exc: &PyBaseExceptionRef, source: &str) -> String {
    let mut chain: Vec<(PyBaseExceptionRef, Option<&str>)> = vec![(exc.clone(), None)];
    while chain.len() < MAX_CHAINED_EXCEPTIONS {
        let current = &chain.last().expect("chain is never empty").0;
        let suppress_context = current
            .as_object()
            .get_attr("__suppress_context__", vm)
            .is_ok_and(|s| s.is(&vm.ctx.true_value));
        let (earlier, link) = if let Some(cause) = current.__cause__() {
            (
                cause,
                "The above exception was the direct cause of the following exception:",
            )
        } else if let Some(context) = current.__context__().filter(|_| !suppress_context) {
            (
                context,
                "During handling of the above exception, another exception occurred:",
            )
        } else {
            break;
        };
        if chain.iter().any(|(e, _)| e.is(&earlier)) {
            break;
        }
        chain.last_mut().expect("chain is never empty").1 = Some(link);
        chain.push((earlier, None));
    }
    chain
        .iter()
        .rev()
        .map(|(exc, link)| match link {
            // The link describes how this exception relates to the one printed before it.
            Some(link) => format!("\n\n{link}\n\n{}", format_one(vm, exc, source)),
            None => format_one(vm, exc, source),
        })
        .collect()
}

fn format_one(vm: &VirtualMachine, exc: &PyRef<PyBaseException>, source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::from("Traceback (most recent call last):\n");
    let frames = user_frames(vm, exc);
    let mut i = 0;
    while i < frames.len() {
        let mut run = 1;
        while i + run < frames.len() && frames[i + run] == frames[i] {
            run += 1;
        }
        for _ in 0..run.min(REPEATED_FRAMES_SHOWN) {
            write_frame(&mut out, &frames[i], &lines);
        }
        if run > REPEATED_FRAMES_SHOWN {
            let more = run - REPEATED_FRAMES_SHOWN;
            let times = if more == 1 { "time" } else { "times" };
            out.push_str(&format!("  [Previous line repeated {more} more {times}]\n"));
        }
        i += run;
    }
    let message = exception_message(vm, exc);
    let type_name = exc.class().name().to_string();
    if message.is_empty() {
        out.push_str(&type_name);
    } else {
        out.push_str(&format!("{type_name}: {message}"));
    }
    out
}

fn write_frame(out: &mut String, frame: &Frame, lines: &[&str]) {
    out.push_str(&format!(
        "  File \"{USER_FILENAME}\", line {}, in {}\n",
        frame.line, frame.function
    ));
    if let Some(text) = frame
        .line
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        out.push_str(&format!("    {}\n", truncate(text, MAX_SOURCE_LINE_CHARS)));
    }
}
