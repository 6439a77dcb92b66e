//! In-process benchmarks of the sandbox (issue 7): per-execution latency, fuel and page faults
//! through the real path (`Sandbox::execute`: queue, worker thread, fresh instance, oneshot
//! back), and how long `Sandbox::new` takes with an empty and with a warm module cache.
//!
//! A `throughput` group then keeps 16 executions in flight on all workers and reports
//! executions per second and CPU time per execution: the ceiling of the HTTP server, and what
//! running executions side by side costs (the workers share one address space, so mapping
//! instance memory and dropping it contend and interrupt each other).
//!
//! Run with `cargo bench --bench sandbox` (`-- example` and the like filter by name). Besides
//! criterion's own report, each benchmark prints the latency distribution of every execution it
//! ran (criterion reports means and medians of batches, the targets are percentiles of single
//! executions), and the whole summary is written to `target/tmp/bench-inprocess.json` for
//! `scripts/bench.sh`.
//!
//! Guests compared, on the same cases:
//! - `pooling`: the embedded, pre-initialised guest with wasmtime's pooling allocator (the
//!   default where the kernel supports `PAGEMAP_SCAN`, see `SandboxConfig::pooling`);
//! - `on_demand`: the same guest with a freshly mapped memory per execution;
//! - `unsnapshotted`: the guest as compiled, which builds the interpreter in every execution
//!   (`target/guest/python-unsnapshotted.wasm`, written by `guest/build.sh`; skipped when absent),
//!   with the default allocator;
//! - `cpython`: the CPython runtime (with the default allocator), when `PYEXEC_TEST_CPYTHON_DIR` names
//!   an installation (`pyexec --data-dir DIR runtime install cpython --from WHEEL`); it also
//!   runs the numpy and pandas cases.
//!
//! Each guest also runs the quick cases as turns of one open session (`<guest>_session`: no
//! instance is created); `sessions/idle_memory` opens sessions and reports the memory each
//! holds once idle (PSS: shared pages counted once); and the throughput of `pooling` is measured again with
//! [`IDLE_SESSIONS`] sessions open (`pooling_with_idle_sessions`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use pyexec::sandbox::{
    Execution, OpenSession, Outcome, Sandbox, SandboxConfig, SessionConfig, TurnMode,
};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// One piece of Python to run, with its `data`.
struct Case {
    name: &'static str,
    code: &'static str,
    data: String,
    /// What `result` must be, so that a broken guest cannot look fast.
    result: String,
    /// Runs on the CPython runtime only (numpy, pandas).
    cpython_only: bool,
}

fn cases() -> Vec<Case> {
    let case = |name, code, data: &str, result: &str| Case {
        name,
        code,
        data: data.to_owned(),
        result: result.to_owned(),
        cpython_only: false,
    };
    let rows: Vec<_> = (0..1000)
        .map(|i| serde_json::json!({"g": i % 10, "x": i}))
        .collect();
    let means: Vec<_> = (0..10).map(|g| format!("\"{g}\":{}.0", 495 + g)).collect();
    vec![
        case(
            "example",
            "result = sum(data['numbers']) / len(data['numbers'])",
            r#"{"numbers": [1, 2, 3, 4, 5]}"#,
            "3.0",
        ),
        case(
            "loop_100k",
            "total = 0\nfor i in range(100000):\n    total += i\nresult = total",
            "{}",
            "4999950000",
        ),
        case(
            "sum_squares_100k",
            "result = sum(i*i for i in range(100000))",
            "{}",
            "333328333350000",
        ),
        case(
            "json_statistics",
            "import json, statistics\n\
             numbers = json.loads(data['numbers'])\n\
             summary = {'mean': statistics.mean(numbers), 'median': statistics.median(numbers),\n\
             \x20          'stdev': round(statistics.stdev(numbers), 6)}\n\
             result = json.loads(json.dumps(summary))",
            r#"{"numbers": "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"}"#,
            r#"{"mean":5.5,"median":5.5,"stdev":3.02765}"#,
        ),
        Case {
            cpython_only: true,
            ..case(
                "numpy_std",
                "import numpy as np\nresult = float(np.linspace(0, 1, 1000).std())",
                "{}",
                "0.2889639542114209",
            )
        },
        Case {
            cpython_only: true,
            ..case(
                "pandas_groupby",
                "import pandas as pd\n\
                 df = pd.DataFrame(data['rows'])\n\
                 result = df.groupby('g')['x'].mean().to_dict()",
                &serde_json::json!({ "rows": rows }).to_string(),
                &format!("{{{}}}", means.join(",")),
            )
        },
    ]
}

impl Case {
    fn execution(&self, guest: &str) -> Execution {
        Execution {
            code: self.code.to_owned(),
            data: Some(RawValue::from_string(self.data.clone()).unwrap()),
            fuel: None,
            tenant: None,
            runtime: (guest == CPYTHON).then(|| CPYTHON.to_owned()),
        }
    }

    fn check(&self, guest: &str, outcome: &Outcome) {
        match &outcome.result {
            Ok(result) => assert_eq!(result.get(), self.result),
            Err(err) => panic!("{}/{guest} failed: {err:?}", self.name),
        }
    }
}

/// The guest that is the CPython runtime, installed where `PYEXEC_TEST_CPYTHON_DIR` says (as
/// for the tests): a data directory holding `runtimes/` and the `cache/` it was compiled into.
const CPYTHON: &str = "cpython";

/// Executions the throughput benchmark keeps in flight, as the HTTP benchmark's connections.
const IN_FLIGHT: usize = 16;

/// Sessions held open while throughput is measured again.
const IDLE_SESSIONS: usize = 200;

/// The unsnapshotted guest, where `guest/build.sh` leaves it.
fn unsnapshotted_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest/python-unsnapshotted.wasm")
}

/// The module cache the tests use too, so that neither compiles the guest twice.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

fn config(pooling: bool, cache_dir: &Path) -> SandboxConfig {
    SandboxConfig {
        cache_dir: Some(cache_dir.to_owned()),
        pooling,
        sessions: SessionConfig {
            max_open: IDLE_SESSIONS + 1,
            per_tenant: IDLE_SESSIONS + 1,
            ..SessionConfig::default()
        },
        ..SandboxConfig::default()
    }
}

/// What one benchmark measured, execution by execution.
#[derive(Serialize)]
struct Summary {
    id: String,
    executions: usize,
    /// `Sandbox::execute`, end to end, in microseconds.
    latency_us: Percentiles,
    /// `Outcome::duration`: instantiate, run and drop the instance, in microseconds.
    instance_us: Percentiles,
    fuel: u64,
    /// Minor page faults of the whole process per execution (copy-on-write and zero pages of
    /// the fresh instance, mostly).
    page_faults: f64,
}

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    fn of(mut micros: Vec<f64>) -> Self {
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            mean: micros.iter().sum::<f64>() / micros.len() as f64,
        }
    }
}

/// What a throughput benchmark measured.
#[derive(Serialize)]
struct Throughput {
    id: String,
    executions: u64,
    per_second: f64,
    /// CPU time of the whole process (user + system) per execution, in microseconds.
    cpu_us: f64,
}

/// Everything the run measured, written for `scripts/bench.sh`.
#[derive(Default, Serialize)]
struct Report {
    /// Which of the snapshot's guests `SandboxConfig::default()` picks here.
    default_guest: &'static str,
    executions: Vec<Summary>,
    throughput: Vec<Throughput>,
    /// `Sandbox::new` with an empty module cache (compiles the guest), in milliseconds.
    sandbox_new_empty_cache_ms: Option<f64>,
    /// `Sandbox::new` with a warm module cache, in milliseconds.
    sandbox_new_warm_cache_ms: Option<Percentiles>,
    /// Memory an idle session holds, per guest.
    idle_session_memory: Vec<IdleSessions>,
}

/// What `sessions/idle_memory` measured for one guest.
#[derive(Serialize)]
struct IdleSessions {
    guest: &'static str,
    sessions: usize,
    /// Growth of the process's memory (PSS) per session opened (and run once), in KiB.
    pss_kib_per_session: f64,
}

/// Field `n` (numbered as in proc(5)) of this process's `/proc/self/stat`.
fn proc_stat(n: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Counted after the parenthesised command name (field 2, which may hold spaces).
    stat.rsplit_once(')')
        .and_then(|(_, fields)| fields.split_whitespace().nth(n - 3))
        .and_then(|field| field.parse().ok())
        .unwrap_or(0)
}

fn minor_faults() -> u64 {
    proc_stat(10)
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // In clock ticks, which Linux reports to user space at 100 Hz (USER_HZ).
    Duration::from_millis(10 * (proc_stat(14) + proc_stat(15)))
}

/// The guests to compare, by name.
fn guests(report: &mut Report) -> Vec<(&'static str, Sandbox)> {
    let cache = cache_dir();
    let default_pooling = SandboxConfig::default().pooling;
    report.default_guest = if default_pooling {
        "pooling"
    } else {
        "on_demand"
    };
    let start = |config| Sandbox::new(config).expect("the sandbox starts");
    let mut guests = vec![
        ("pooling", start(config(true, &cache))),
        ("on_demand", start(config(false, &cache))),
    ];
    match std::fs::read(unsnapshotted_wasm()) {
        Ok(wasm) => guests.push((
            "unsnapshotted",
            Sandbox::with_guest(config(default_pooling, &cache), &wasm)
                .expect("the sandbox starts"),
        )),
        Err(err) => eprintln!(
            "skipping the unsnapshotted guest: cannot read {} ({err}); `guest/build.sh` writes it",
            unsnapshotted_wasm().display()
        ),
    }
    match std::env::var_os("PYEXEC_TEST_CPYTHON_DIR").map(PathBuf::from) {
        Some(dir) => guests.push((
            CPYTHON,
            start(SandboxConfig {
                runtimes_dir: Some(dir.join("runtimes")),
                ..config(default_pooling, &dir.join("cache"))
            }),
        )),
        None => eprintln!("skipping CPython: PYEXEC_TEST_CPYTHON_DIR names no installation"),
    }
    guests
}

fn execute(
    c: &mut Criterion,
    report: &mut Report,
    runtime: &Runtime,
    guests: &[(&'static str, Sandbox)],
) {
    for case in &cases() {
        let mut group = c.benchmark_group(format!("execute/{}", case.name));
        for (name, sandbox) in guests {
            if case.cpython_only && *name != CPYTHON {
                continue;
            }
            // Tens of milliseconds per execution: criterion's default (100 samples of growing
            // batches) would take minutes.
            let slow = case.name.ends_with("_100k") || *name == "unsnapshotted";
            if slow {
                group
                    .sampling_mode(SamplingMode::Flat)
                    .sample_size(20)
                    .measurement_time(Duration::from_secs(10));
            } else {
                group
                    .sampling_mode(SamplingMode::Auto)
                    .sample_size(100)
                    .measurement_time(Duration::from_secs(5));
            }
            let fresh = |execution| {
                runtime
                    .block_on(sandbox.execute(execution))
                    .expect("the execution is admitted")
            };
            measure(&mut group, report, name, case, &fresh);
            // Turns of one session, for the cases a session is for: no instance is created.
            if slow {
                continue;
            }
            let session = runtime
                .block_on(sandbox.open_session(OpenSession {
                    runtime: case.execution(name).runtime,
                    ..OpenSession::default()
                }))
                .expect("a session opens");
            let turn = |execution| {
                let turn = sandbox.prepare_turn(&session.id, execution, TurnMode::Module);
                runtime.block_on(turn.expect("the turn is admitted").run())
            };
            measure(&mut group, report, &format!("{name}_session"), case, &turn);
            sandbox
                .close_session("", &session.id)
                .expect("the session is open");
        }
        group.finish();
    }
}

/// Benchmarks `run` on `case` as `group`'s `name`, printing and reporting the latency of every
/// execution.
fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    report: &mut Report,
    name: &str,
    case: &Case,
    run: &dyn Fn(Execution) -> Outcome,
) {
    let guest = name.trim_end_matches("_session");
    let (mut latency, mut instance, mut fuel, mut faults) = (vec![], vec![], 0, 0);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let faults_before = minor_faults();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let execution = case.execution(guest);
                let started = Instant::now();
                let outcome = run(execution);
                let elapsed = started.elapsed();
                case.check(guest, &outcome);
                total += elapsed;
                latency.push(elapsed.as_secs_f64() * 1e6);
                instance.push(outcome.duration.as_secs_f64() * 1e6);
                fuel = outcome.fuel_used;
            }
            faults += minor_faults() - faults_before;
            total
        });
    });
    if latency.is_empty() {
        return; // filtered out
    }
    let summary = Summary {
        id: format!("execute/{}/{name}", case.name),
        executions: latency.len(),
        page_faults: faults as f64 / latency.len() as f64,
        latency_us: Percentiles::of(latency),
        instance_us: Percentiles::of(instance),
        fuel,
    };
    println!(
        "{}: {} executions; latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; \
         in the instance p50 {:.0} µs; fuel {}; {:.0} page faults per execution",
        summary.id,
        summary.executions,
        summary.latency_us.p50,
        summary.latency_us.p99,
        summary.latency_us.max,
        summary.instance_us.p50,
        summary.fuel,
        summary.page_faults,
    );
    report.executions.push(summary);
}

fn throughput(
    c: &mut Criterion,
    report: &mut Report,
    runtime: &Runtime,
    guests: &[(&'static str, Sandbox)],
) {
    let case = std::sync::Arc::new(cases().swap_remove(0));
    let mut group = c.benchmark_group(format!("throughput/{}", case.name));
    group.throughput(criterion::Throughput::Elements(1));
    let mut runs: Vec<_> = guests
        .iter()
        .filter(|(name, _)| *name != "unsnapshotted")
        .map(|(name, sandbox)| (name.to_string(), *name, sandbox, 0))
        .collect();
    if let Some((_, sandbox)) = guests.iter().find(|(name, _)| *name == "pooling") {
        let with_sessions = "pooling_with_idle_sessions".to_string();
        runs.push((with_sessions, "pooling", sandbox, IDLE_SESSIONS));
    }
    for (id, name, sandbox, idle_sessions) in runs {
        let held = open_sessions(runtime, sandbox, name, idle_sessions);
        let (mut executions, mut elapsed, mut cpu) = (0, Duration::ZERO, Duration::ZERO);
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                let (cpu_before, started) = (cpu_time(), Instant::now());
                runtime.block_on(async {
                    let mut in_flight = JoinSet::new();
                    for _ in 0..iters {
                        if in_flight.len() == IN_FLIGHT {
                            in_flight.join_next().await;
                        }
                        let (sandbox, case) = (sandbox.clone(), case.clone());
                        in_flight.spawn(async move {
                            let outcome = sandbox.execute(case.execution(name)).await;
                            case.check(name, &outcome.expect("the execution is admitted"));
                        });
                    }
                    in_flight.join_all().await;
                });
                let took = started.elapsed();
                executions += iters;
                elapsed += took;
                cpu += cpu_time() - cpu_before;
                took
            });
        });
        for session in held {
            sandbox
                .close_session("", &session)
                .expect("the session is open");
        }
        if executions == 0 {
            continue; // filtered out
        }
        let summary = Throughput {
            id: format!("throughput/{}/{id}", case.name),
            executions,
            per_second: executions as f64 / elapsed.as_secs_f64(),
            cpu_us: cpu.as_secs_f64() * 1e6 / executions as f64,
        };
        println!(
            "{}: {:.0} executions/s, {:.0} µs of CPU per execution",
            summary.id, summary.per_second, summary.cpu_us
        );
        report.throughput.push(summary);
    }
    group.finish();
}

/// Opens `count` sessions of `guest` on `sandbox`, each after one turn of the example; their
/// ids.
fn open_sessions(runtime: &Runtime, sandbox: &Sandbox, guest: &str, count: usize) -> Vec<String> {
    let case = cases().swap_remove(0);
    (0..count)
        .map(|_| {
            let session = runtime
                .block_on(sandbox.open_session(OpenSession {
                    runtime: case.execution(guest).runtime,
                    ..OpenSession::default()
                }))
                .expect("a session opens");
            let turn = sandbox.prepare_turn(&session.id, case.execution(guest), TurnMode::Module);
            case.check(
                guest,
                &runtime.block_on(turn.expect("the turn is admitted").run()),
            );
            session.id
        })
        .collect()
}

/// The proportional set size (PSS) of this process, in KiB: resident memory with each shared
/// page counted once, however many times it is mapped. Every instance maps the guest's image
/// again, so VmRSS counts the image's clean, shared pages once per session (~4.4 MiB each for
/// RustPython) although they take memory once.
fn proportional_kib() -> u64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or(0)
}

/// The memory an idle session holds: sessions opened and run once, then left idle.
fn idle_sessions(report: &mut Report, runtime: &Runtime, guests: &[(&'static str, Sandbox)]) {
    const SESSIONS: usize = 50;
    if !criterion_filter_matches("sessions/idle_memory") {
        return;
    }
    for (guest, sandbox) in guests
        .iter()
        .filter(|(name, _)| matches!(*name, "pooling" | "on_demand" | CPYTHON))
    {
        // One first, so the image and the code it touches are resident already.
        let warm = open_sessions(runtime, sandbox, guest, 1);
        let before = proportional_kib();
        let held = open_sessions(runtime, sandbox, guest, SESSIONS);
        let per_session = (proportional_kib().saturating_sub(before)) as f64 / SESSIONS as f64;
        println!(
            "sessions/idle_memory/{guest}: {per_session:.0} KiB (PSS) per idle session ({SESSIONS} sessions)"
        );
        report.idle_session_memory.push(IdleSessions {
            guest,
            sessions: SESSIONS,
            pss_kib_per_session: per_session,
        });
        for session in warm.into_iter().chain(held) {
            sandbox
                .close_session("", &session)
                .expect("the session is open");
        }
    }
}

fn startup(c: &mut Criterion, report: &mut Report) {
    let mut group = c.benchmark_group("startup");
    let cache = tempfile::tempdir().expect("a temporary directory");
    let config = config(SandboxConfig::default().pooling, cache.path());
    // One compile takes 10–30 s here, too long for criterion's ten samples at least: timed once.
    if criterion_filter_matches("startup/sandbox_new_empty_cache") {
        let started = Instant::now();
        drop(Sandbox::new(config.clone()).expect("the sandbox starts"));
        let elapsed = started.elapsed();
        println!("startup/sandbox_new_empty_cache: {elapsed:.2?} (one run)");
        report.sandbox_new_empty_cache_ms = Some(elapsed.as_secs_f64() * 1e3);
    }
    let mut times = vec![];
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .bench_function("sandbox_new_warm_cache", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let sandbox = Sandbox::new(config.clone());
                    let elapsed = started.elapsed();
                    drop(sandbox.expect("the sandbox starts"));
                    total += elapsed;
                    times.push(elapsed.as_secs_f64() * 1e3);
                }
                total
            });
        });
    group.finish();
    if !times.is_empty() {
        let warm = Percentiles::of(times);
        println!(
            "startup/sandbox_new_warm_cache: p50 {:.1} ms, max {:.1} ms",
            warm.p50, warm.max
        );
        report.sandbox_new_warm_cache_ms = Some(warm);
    }
}

/// Whether criterion's name filter (the first free argument, a substring) selects `id`; for
/// the one measurement taken outside criterion.
fn criterion_filter_matches(id: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .is_none_or(|filter| id.contains(&filter))
}

fn benches(c: &mut Criterion) {
    let mut report = Report::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let guests = guests(&mut report);
    execute(c, &mut report, &runtime, &guests);
    throughput(c, &mut report, &runtime, &guests);
    idle_sessions(&mut report, &runtime, &guests);
    drop(guests);
    startup(c, &mut report);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-inprocess.json");
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(&path, json).expect("writing the report");
    println!("summary written to {}", path.display());
}

criterion_group!(sandbox, benches);
criterion_main!(sandbox);
