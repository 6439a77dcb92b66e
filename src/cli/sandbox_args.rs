//! The sandbox's settings, shared by `pyexec serve` and `pyexec run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;

use crate::sandbox::{
    CPYTHON_MEMORY_BYTES, DEFAULT_MAX_OPEN, Limits, SandboxConfig, SessionConfig,
    is_valid_node_name,
};

/// Limits and sizing of the sandbox.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Fuel (units of wasm work) per execution, unless the key sets its own; 10^9 ≈ 0.1 s of CPU
    #[arg(long, env = "PYEXEC_FUEL", default_value_t = Limits::default().fuel, value_name = "UNITS")]
    pub fuel: u64,

    /// Wall-clock limit per execution, in seconds (fractions allowed)
    #[arg(long, env = "PYEXEC_TIMEOUT", default_value_t = Limits::default().timeout.as_secs_f64(), value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: f64,

    /// Linear memory per execution, in MiB
    #[arg(long, env = "PYEXEC_MEMORY_MIB", default_value_t = Limits::default().memory_bytes >> 20, value_name = "MIB", value_parser = clap::value_parser!(u16).range(64..=4095).map(usize::from))]
    pub memory_mib: usize,

    /// Linear memory per execution of the CPython runtime, in MiB
    #[arg(long, env = "PYEXEC_CPYTHON_MEMORY_MIB", default_value_t = CPYTHON_MEMORY_BYTES >> 20, value_name = "MIB", value_parser = clap::value_parser!(u16).range(64..=4095).map(usize::from))]
    pub cpython_memory_mib: usize,

    /// stdout + stderr per execution (also the largest serialised result), in bytes
    #[arg(long, env = "PYEXEC_OUTPUT_BYTES", default_value_t = Limits::default().output_bytes, value_name = "BYTES")]
    pub output_bytes: usize,

    /// Code plus data per execution, in bytes
    #[arg(long, env = "PYEXEC_INPUT_BYTES", default_value_t = Limits::default().input_bytes, value_name = "BYTES")]
    pub input_bytes: usize,

    /// Executions running at once [default: the number of CPUs]
    #[arg(long, env = "PYEXEC_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub workers: Option<usize>,

    /// Executions that may wait for a worker before new ones are refused (503)
    #[arg(long, env = "PYEXEC_QUEUE", default_value_t = SandboxConfig::default().queue, value_name = "N")]
    pub queue: usize,

    #[command(flatten)]
    pub runtimes_dir: RuntimesDirArg,

    /// Where the compiled guest module is cached [default: <DATA_DIR>/cache]
    #[arg(long, env = "PYEXEC_MODULE_CACHE_DIR", value_name = "DIR")]
    pub module_cache_dir: Option<PathBuf>,
}

impl SandboxArgs {
    pub fn config(&self, data_dir: &Path) -> SandboxConfig {
        let defaults = SandboxConfig::default();
        SandboxConfig {
            limits: Limits {
                fuel: self.fuel,
                timeout: Duration::from_secs_f64(self.timeout),
                memory_bytes: self.memory_mib << 20,
                output_bytes: self.output_bytes,
                input_bytes: self.input_bytes,
            },
            cpython_memory_bytes: self.cpython_memory_mib << 20,
            runtimes_dir: Some(self.runtimes_dir.resolve(data_dir)),
            workers: self.workers.unwrap_or(defaults.workers),
            queue: self.queue,
            cache_dir: Some(
                self.module_cache_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("cache")),
            ),
            pooling: defaults.pooling,
            sessions: defaults.sessions,
        }
    }
}

/// How sessions (`/sessions`) are bounded: `serve` takes these.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Seconds without a turn after which a session is closed, unless it asks for another
    /// idle timeout (up to --session-lifetime)
    #[arg(long, env = "PYEXEC_SESSION_IDLE_TIMEOUT", default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..).map(u64::from))]
    pub session_idle_timeout: u64,

    /// Seconds after which a session is closed, however busy
    #[arg(long, env = "PYEXEC_SESSION_LIFETIME", default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..).map(u64::from))]
    pub session_lifetime: u64,

    /// Sessions one API key may have open at once
    #[arg(
        long,
        env = "PYEXEC_SESSIONS_PER_KEY",
        default_value_t = 4,
        value_name = "N"
    )]
    pub sessions_per_key: usize,

    /// Sessions open at once on this server, all keys together (each holds an interpreter's
    /// memory; past this, opening one answers 503)
    #[arg(long, env = "PYEXEC_MAX_SESSIONS", default_value_t = DEFAULT_MAX_OPEN, value_name = "N", value_parser = clap::value_parser!(u16).map(usize::from))]
    pub max_sessions: usize,

    /// This server's name in the session ids it hands out (lowercase letters, digits, `-`),
    /// for a load balancer to route a session's requests to the server that holds it
    /// [default: random at each start]
    #[arg(long, env = "PYEXEC_NODE_NAME", value_name = "NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,
}

impl SessionArgs {
    pub fn config(&self) -> SessionConfig {
        let lifetime = Duration::from_secs(self.session_lifetime);
        let defaults = SessionConfig::default();
        SessionConfig {
            idle_timeout: Duration::from_secs(self.session_idle_timeout).min(lifetime),
            max_idle_timeout: lifetime,
            lifetime,
            per_tenant: self.sessions_per_key,
            max_open: self.max_sessions,
            node: self.node_name.clone().unwrap_or(defaults.node),
            clock: defaults.clock,
        }
    }
}

fn parse_node_name(text: &str) -> Result<String, String> {
    if is_valid_node_name(text) {
        Ok(text.to_owned())
    } else {
        Err("must be 1 to 32 lowercase letters, digits and dashes".into())
    }
}

/// Where optional runtimes are installed: `serve`, `run` and `runtime …` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimesDirArg {
    /// Where runtimes are installed [default: <DATA_DIR>/runtimes]
    #[arg(long, env = "PYEXEC_RUNTIMES_DIR", value_name = "DIR")]
    pub runtimes_dir: Option<PathBuf>,
}

impl RuntimesDirArg {
    pub fn resolve(&self, data_dir: &Path) -> PathBuf {
        self.runtimes_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("runtimes"))
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if seconds > 0.0 && seconds <= 3600.0 {
        Ok(seconds)
    } else {
        Err("must be more than 0 and at most 3600 seconds".into())
    }
}
