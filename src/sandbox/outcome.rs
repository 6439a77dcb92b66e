//! What an execution ends in: the types the rest of the crate sees of the sandbox.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The end of one execution that ran (or started to).
#[derive(Debug)]
pub struct Outcome {
    /// The runtime that ran it (empty when no runtime was reached).
    pub runtime: String,
    /// The JSON of the global `result`, or why there is none.
    pub result: Result<Box<RawValue>, ExecutionError>,
    /// The figures the code left open (CPython's matplotlib), as images; empty otherwise.
    pub images: Vec<Image>,
    /// Everything the code wrote to stdout, up to the output limit (invalid UTF-8 replaced).
    pub stdout: String,
    /// Everything the code wrote to stderr, up to the output limit (invalid UTF-8 replaced).
    pub stderr: String,
    /// Fuel the execution consumed, whatever its end.
    pub fuel_used: u64,
    /// Wall-clock time from the start of the instance to the end of the run.
    pub duration: Duration,
    /// A session's turn that a limit (or a failure) stopped: the interpreter may be in any
    /// state, so the session was closed.
    pub session_closed: bool,
}

impl Outcome {
    /// The outcome of an execution on `runtime` that the sandbox failed after `duration`:
    /// `internal`, with nothing the guest wrote.
    pub(crate) fn internal(runtime: &str, duration: Duration) -> Self {
        Self {
            runtime: runtime.to_owned(),
            result: Err(ExecutionError::internal()),
            images: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            fuel_used: 0,
            duration,
            session_closed: false,
        }
    }
}

/// A picture the code drew: a matplotlib figure it left open, rendered by the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Image {
    /// The image format: `png`.
    #[schema(example = "png")]
    pub format: String,
    /// The image, base64-encoded.
    pub data: String,
}

/// Why an execution produced no result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionError {
    /// Stable, machine-readable category.
    pub kind: ErrorKind,
    /// The Python exception type (`ZeroDivisionError`), or the limit's name for limits.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Human-readable explanation.
    pub message: String,
    /// The line of the user's code the error points at, when known.
    pub line: Option<u32>,
    /// Traceback of the user's frames, CPython-style, when there is one.
    pub traceback: Option<String>,
}

/// The stable error kinds of the API. Guest-side kinds come from the guest's reply; the others
/// are limits and failures only the host can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The code raised an exception it did not catch.
    PythonException,
    /// The code does not compile.
    SyntaxError,
    /// `result` holds something JSON cannot represent (a set, NaN, a cycle…).
    ResultNotSerializable,
    /// The code called `sys.exit()` with a non-zero status.
    SystemExit,
    /// The code ended the interpreter (`os._exit()`) before it could reply.
    ProcessExit,
    /// The execution used up its fuel (CPU budget).
    FuelExhausted,
    /// The execution ran past its wall-clock deadline.
    Timeout,
    /// The execution asked for more linear memory than allowed.
    MemoryLimit,
    /// The execution exhausted the wasm stack.
    StackOverflow,
    /// stdout + stderr (or the serialised result) exceeded the output limit.
    OutputLimit,
    /// The sandbox failed in a way that is not the code's fault; details are logged.
    Internal,
}

impl ErrorKind {
    /// Every kind, for documentation and metrics.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::PythonException,
        ErrorKind::SyntaxError,
        ErrorKind::ResultNotSerializable,
        ErrorKind::SystemExit,
        ErrorKind::ProcessExit,
        ErrorKind::FuelExhausted,
        ErrorKind::Timeout,
        ErrorKind::MemoryLimit,
        ErrorKind::StackOverflow,
        ErrorKind::OutputLimit,
        ErrorKind::Internal,
    ];

    /// The kind's name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PythonException => "python_exception",
            ErrorKind::SyntaxError => "syntax_error",
            ErrorKind::ResultNotSerializable => "result_not_serializable",
            ErrorKind::SystemExit => "system_exit",
            ErrorKind::ProcessExit => "process_exit",
            ErrorKind::FuelExhausted => "fuel_exhausted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::Internal => "internal",
        }
    }
}

impl ExecutionError {
    /// A failure of the sandbox itself; the details go to the log, not to the client.
    pub(crate) fn internal() -> Self {
        Self::limit(
            ErrorKind::Internal,
            "InternalError",
            "the sandbox failed; the failure has been logged".into(),
        )
    }

    /// An error the host determined, with no Python traceback.
    pub(crate) fn limit(kind: ErrorKind, type_name: &str, message: String) -> Self {
        Self {
            kind,
            type_name: type_name.to_owned(),
            message,
            line: None,
            traceback: None,
        }
    }
}

/// Why an execution was refused before it ran; nothing was started, nothing should be charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Every worker is busy and the queue is full.
    #[error("the sandbox is at capacity ({capacity} executions running or queued); retry shortly")]
    Overloaded {
        /// Executions that may be running or queued at once.
        capacity: usize,
    },
    /// Code plus data exceed the input limit.
    #[error("code and data take {size} bytes, more than the limit of {limit} bytes")]
    InputTooLarge {
        /// Bytes of the request.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// `data` nests arrays and objects more deeply than the guest can take.
    #[error(
        "data nests arrays and objects too deeply: the nesting limit is {limit} levels, counting data's own object"
    )]
    DataTooDeep {
        /// The nesting limit, [`MAX_DATA_DEPTH`](super::MAX_DATA_DEPTH).
        limit: usize,
    },
    /// The execution names a runtime this sandbox does not have.
    #[error("unknown runtime {requested:?}; available: {}", available.join(", "))]
    UnknownRuntime {
        /// The name asked for.
        requested: String,
        /// The runtimes there are, the default first.
        available: Vec<String>,
    },
    /// No open session of the caller has this id (it never existed, expired, was closed, or
    /// belongs to someone else).
    #[error("{}", session_not_found(id, other_node.as_deref()))]
    SessionNotFound {
        id: String,
        /// The node the id names, when it is not this one: sessions live on the node that
        /// opened them.
        other_node: Option<String>,
    },
    /// Another turn of the session is running.
    #[error("session {id} is running another turn; send turns one at a time")]
    SessionBusy { id: String },
    /// The caller has as many sessions open as it may.
    #[error("at most {limit} sessions may be open at once for this key; delete one first")]
    SessionLimit { limit: usize },
}

fn session_not_found(id: &str, other_node: Option<&str>) -> String {
    match other_node {
        Some(node) => format!(
            "no session {id} on this node: it was opened on node {node:?}; requests for a \
             session must reach the node that opened it (route /sessions/{{id}} by the node \
             name in the id)"
        ),
        None => format!("no open session {id} for this key (it may have expired or been deleted)"),
    }
}
