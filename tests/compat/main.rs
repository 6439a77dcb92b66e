//! The compatibility suite: doctest examples of real-world Python not written for pyexec (PyPI
//! packages, CPython's standard library and its doctest-based tests), run in the guest and
//! judged against the output CPython 3.11 recorded for them (scripts/compat/record.py wrote
//! tests/compat/data/). The same suite runs on each runtime: RustPython (always) and CPython
//! 3.15 (when one is installed, tests/cpython/installed.rs), each with its own list of known
//! failures. Prints the pass rate per source; fails when an example not listed in the runtime's
//! tests/compat/known_failures*.json fails, or a listed one passes. Writes every failure to
//! target/tmp/compat-report*.json, from which scripts/compat/known_failures.py regenerates the
//! lists and docs/COMPATIBILITY.md. Runs the guest through `pyexec::sandbox` only.

mod checker;
mod fuzz;
#[path = "../cpython/installed.rs"]
mod installed;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use pyexec::sandbox::{Execution, ExecutionError, Limits, Sandbox, SandboxConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use checker::{Flags, Output};

/// Runs one module's examples (tests/compat/driver.py; its docstring has the protocol).
const DRIVER: &str = include_str!("driver.py");
/// Starts each line of the driver's reports on stdout.
const RECORD_MARK: char = '\u{1e}';

/// The module cache shared by every test binary of this crate.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Where a runtime's last run's failures go, for scripts/compat/known_failures.py.
fn report_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Limits that fit a whole module's examples in one execution (a package's sources travel in
/// `data`), on either runtime.
fn suite_config() -> SandboxConfig {
    let limits = Limits {
        fuel: 200_000_000_000,
        timeout: Duration::from_secs(120),
        memory_bytes: 512 << 20,
        output_bytes: 16 << 20,
        input_bytes: 4 << 20,
    };
    SandboxConfig {
        limits,
        cpython_memory_bytes: limits.memory_bytes,
        queue: 256,
        pooling: false,
        ..SandboxConfig::default()
    }
}

/// The sandbox RustPython runs the suite in.
static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(SandboxConfig {
        cache_dir: Some(cache_dir()),
        ..suite_config()
    })
    .expect("the sandbox starts")
});

/// The sandbox with the installed CPython runtime, or `None` when there is none; it is compiled
/// into the installation's own module cache.
static CPYTHON_SANDBOX: LazyLock<Option<Sandbox>> = LazyLock::new(|| {
    let dir = installed::installed()?;
    Some(
        Sandbox::new(SandboxConfig {
            runtimes_dir: Some(dir.join("runtimes")),
            cache_dir: Some(dir.join("cache")),
            ..suite_config()
        })
        .expect("the sandbox starts with the installed CPython runtime"),
    )
});

/// Where examples run: a sandbox and the runtime of it that runs them.
#[derive(Clone, Copy)]
struct Guest {
    sandbox: &'static Sandbox,
    runtime: &'static str,
}

/// A recorded source: tests/compat/data/<source>.json.
#[derive(Deserialize)]
struct Source {
    source: String,
    files: Box<RawValue>,
    programs: Vec<Program>,
}

/// One module: its docstrings run in one execution.
#[derive(Deserialize)]
struct Program {
    module: String,
    globals: String,
    tests: Vec<Docstring>,
}

#[derive(Deserialize)]
struct Docstring {
    name: String,
    examples: Vec<Example>,
}

#[derive(Deserialize)]
struct Example {
    source: String,
    flags: Vec<String>,
    #[serde(flatten)]
    judge: Judge,
}

/// How CPython's recording says the guest's output is to be judged.
#[derive(Deserialize)]
#[serde(tag = "judge", rename_all = "lowercase")]
enum Judge {
    /// Against what CPython printed (the same in every recorded run).
    Cpython { want: String, exc: Option<String> },
    /// Against the documented output (CPython's varies between runs but always matches it).
    Documented { want: String, exc: Option<String> },
    /// Run for its effect on later examples, not judged: CPython does not print what is
    /// documented here.
    Excluded,
}

/// What the driver gets as `data`.
#[derive(Serialize)]
struct DriverInput<'a> {
    files: &'a RawValue,
    module: &'a str,
    globals: &'a str,
    tests: Vec<DriverDocstring<'a>>,
}

#[derive(Serialize)]
struct DriverDocstring<'a> {
    name: &'a str,
    examples: Vec<&'a str>,
}

/// One line of the driver's reports.
#[derive(Deserialize)]
struct Record {
    test: usize,
    example: usize,
    #[serde(flatten)]
    output: Output,
}

/// What one example did in the guest: its output, or why it has none.
type Ran = Result<Output, String>;

/// Runs the first `count` examples of each listed docstring (by index) in one execution;
/// returns each reported example's output by (docstring, example) and the error that ended the
/// execution, if any.
async fn execute(
    guest: Guest,
    files: &RawValue,
    program: &Program,
    batch: &[(usize, usize)],
) -> (Vec<(usize, usize, Output)>, Option<ExecutionError>) {
    let input = DriverInput {
        files,
        module: &program.module,
        globals: &program.globals,
        tests: batch
            .iter()
            .map(|&(test, count)| DriverDocstring {
                name: &program.tests[test].name,
                examples: program.tests[test].examples[..count]
                    .iter()
                    .map(|example| example.source.as_str())
                    .collect(),
            })
            .collect(),
    };
    let data = RawValue::from_string(serde_json::to_string(&input).unwrap()).unwrap();
    let outcome = guest
        .sandbox
        .execute(Execution {
            code: DRIVER.to_owned(),
            data: Some(data),
            fuel: None,
            tenant: None,
            runtime: Some(guest.runtime.to_owned()),
        })
        .await
        .expect("the execution is admitted");
    let records = outcome
        .stdout
        .split('\n')
        .filter_map(|line| line.strip_prefix(RECORD_MARK))
        .map(|json| {
            let record: Record = serde_json::from_str(json).expect("a driver record");
            (batch[record.test].0, record.example, record.output)
        })
        .collect();
    (records, outcome.result.err())
}

/// Runs a module's docstrings, all in one execution when nothing goes wrong. An example that
/// ends the execution (a crash, a limit) is charged with it, the rest of its docstring is not
/// run, and a new execution goes on from the next docstring. A crash leaves no output behind
/// (the sandbox drops an `internal` execution's stdout), so then the docstrings run one per
/// execution until the crashing one, and prefixes of it find the crashing example.
async fn run_program(guest: Guest, files: &RawValue, program: &Program) -> Vec<Vec<Ran>> {
    let tests = &program.tests;
    let count = |test: usize| tests[test].examples.len();
    let mut ran: Vec<Vec<Option<Ran>>> =
        tests.iter().map(|t| vec![None; t.examples.len()]).collect();
    let mut start = 0;
    let mut one_at_a_time = false;
    while start < tests.len() {
        let batch: Vec<(usize, usize)> = if one_at_a_time {
            vec![(start, count(start))]
        } else {
            (start..tests.len())
                .map(|test| (test, count(test)))
                .collect()
        };
        let (records, error) = execute(guest, files, program, &batch).await;
        let mut next = (start, 0);
        for (test, example, output) in records.iter().cloned() {
            ran[test][example] = Some(Ok(output));
            next = (test, example + 1);
        }
        let Some(error) = error else {
            start = batch.last().map_or(start, |&(test, _)| test) + 1;
            continue;
        };
        if records.is_empty() && !one_at_a_time {
            one_at_a_time = true;
            continue;
        }
        if records.is_empty() {
            next = (
                start,
                first_failing_prefix(guest, files, program, start, &mut ran).await,
            );
        } else if next.1 == count(next.0) {
            next = (next.0 + 1, 0);
        }
        let (test, example) = next;
        if test == tests.len() {
            break;
        }
        let ended = format!(
            "the execution ended ({:?}): {}",
            error.kind,
            error.message.lines().next().unwrap_or_default()
        );
        ran[test][example] = Some(Err(ended));
        for later in &mut ran[test][example + 1..] {
            *later = Some(Err(
                "not run: an earlier example of its docstring ended the execution".to_owned(),
            ));
        }
        start = test + 1;
        one_at_a_time = false;
    }
    ran.into_iter()
        .map(|test| {
            test.into_iter()
                .map(|ran| ran.unwrap_or_else(|| Err("the driver did not report it".to_owned())))
                .collect()
        })
        .collect()
}

/// The index of the example that ends the execution of docstring `test` (known to end it),
/// by bisecting on how many of its examples run; records the outputs of those before it.
async fn first_failing_prefix(
    guest: Guest,
    files: &RawValue,
    program: &Program,
    test: usize,
    ran: &mut [Vec<Option<Ran>>],
) -> usize {
    // Running `passing` examples ends normally; running `failing` examples does not.
    let (mut passing, mut failing) = (0, program.tests[test].examples.len());
    while failing - passing > 1 {
        let middle = (passing + failing) / 2;
        let (records, error) = execute(guest, files, program, &[(test, middle)]).await;
        if error.is_none() {
            passing = middle;
            for (_, example, output) in records {
                ran[test][example] = Some(Ok(output));
            }
        } else {
            failing = middle;
        }
    }
    passing
}

/// The verdict on one example.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Verdict {
    Passed,
    Failed {
        want: Output,
        got: Option<Output>,
        error: Option<String>,
    },
    Excluded,
}

fn judge(example: &Example, ran: Ran) -> Verdict {
    let (want, exc) = match &example.judge {
        Judge::Excluded => return Verdict::Excluded,
        Judge::Cpython { want, exc } | Judge::Documented { want, exc } => (want, exc),
    };
    let want = Output {
        out: want.clone(),
        exc: exc.clone(),
    };
    let flags = Flags::from_names(example.flags.iter().map(String::as_str))
        .expect("recorded flags are known");
    match ran {
        Ok(got) if checker::example_passes(&want, &got, flags) => Verdict::Passed,
        Ok(got) => Verdict::Failed {
            want,
            got: Some(got),
            error: None,
        },
        Err(error) => Verdict::Failed {
            want,
            got: None,
            error: Some(error),
        },
    }
}

/// tests/compat/known_failures.json: each failing example's id and the key of its cause.
#[derive(Deserialize)]
struct KnownFailures {
    failures: BTreeMap<String, String>,
}

fn load_sources() -> Vec<Source> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_path("tests/compat/data"))
        .expect("tests/compat/data")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// Writes past libtest's output capture, so the pass rates show in every `cargo test`.
fn show(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_behaves_as_in_cpython() {
    // Starting the sandbox blocks (it may compile the guest): not on a runtime worker.
    let sandbox = tokio::task::spawn_blocking(|| LazyLock::force(&SANDBOX))
        .await
        .unwrap();
    let guest = Guest {
        sandbox,
        runtime: "rustpython",
    };
    let report = report_path("compat-report.json");
    run_suite(guest, "tests/compat/known_failures.json", &report).await;
}

/// The same suite on CPython 3.15, whose differences from 3.11 are its known failures; without
/// an installed runtime it says it is skipped (installed.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_behaves_as_in_cpython_on_the_cpython_runtime() {
    let sandbox = tokio::task::spawn_blocking(|| LazyLock::force(&CPYTHON_SANDBOX).as_ref())
        .await
        .unwrap();
    let Some(sandbox) = sandbox else { return };
    let guest = Guest {
        sandbox,
        runtime: "cpython",
    };
    let report = report_path("compat-report-cpython.json");
    run_suite(guest, "tests/compat/known_failures_cpython.json", &report).await;
}

/// Runs every example on `guest`, prints the pass rates, writes every failure to `report_file` and
/// fails unless exactly the examples listed in `known_failures` (a path in the repository)
/// fail.
async fn run_suite(guest: Guest, known_failures: &str, report_file: &Path) {
    let started = Instant::now();
    let sources: Vec<Arc<Source>> = load_sources().into_iter().map(Arc::new).collect();
    let known: KnownFailures =
        serde_json::from_str(&std::fs::read_to_string(repo_path(known_failures)).unwrap())
            .expect(known_failures);

    // The largest modules first, so the two workers finish together.
    let mut programs: Vec<(Arc<Source>, usize)> = sources
        .iter()
        .flat_map(|source| (0..source.programs.len()).map(|i| (source.clone(), i)))
        .collect();
    let size = |(source, i): &(Arc<Source>, usize)| -> usize {
        source.programs[*i]
            .tests
            .iter()
            .map(|t| t.examples.len())
            .sum()
    };
    programs.sort_by_key(|program| std::cmp::Reverse(size(program)));
    let mut runs = tokio::task::JoinSet::new();
    for (source, index) in programs {
        runs.spawn(async move {
            let ran = run_program(guest, &source.files, &source.programs[index]).await;
            (source, index, ran)
        });
    }

    let mut verdicts: BTreeMap<String, BTreeMap<String, Verdict>> = BTreeMap::new();
    while let Some(finished) = runs.join_next().await {
        let (source, index, ran) = finished.expect("a program's run does not panic");
        let per_source = verdicts.entry(source.source.clone()).or_default();
        for (test, ran) in source.programs[index].tests.iter().zip(ran) {
            for (i, (example, ran)) in test.examples.iter().zip(ran).enumerate() {
                let id = format!("{}:{}[{i}]", source.source, test.name);
                per_source.insert(id, judge(example, ran));
            }
        }
    }

    show(&format!(
        "compatibility suite on {} ({:.0} s):",
        guest.runtime,
        started.elapsed().as_secs_f64()
    ));
    let (mut all_passed, mut all_failed) = (0, 0);
    for (source, per_source) in &verdicts {
        let passed = count(per_source, |v| matches!(v, Verdict::Passed));
        let failed = count(per_source, |v| matches!(v, Verdict::Failed { .. }));
        let excluded = count(per_source, |v| matches!(v, Verdict::Excluded));
        all_passed += passed;
        all_failed += failed;
        show(&format!(
            "  {source:<18} {passed} passed, {failed} failed ({}; {excluded} not judged)",
            percent(passed, failed)
        ));
    }
    show(&format!(
        "  {:<18} {all_passed} passed, {all_failed} failed ({})",
        "overall",
        percent(all_passed, all_failed)
    ));

    let failures: BTreeMap<&String, &Verdict> = verdicts
        .values()
        .flatten()
        .filter(|(_, verdict)| matches!(verdict, Verdict::Failed { .. }))
        .collect();
    let report = serde_json::json!({
        "passed": all_passed,
        "failed": all_failed,
        "per_source": verdicts.iter().map(|(source, per_source)| (source, serde_json::json!({
            "passed": count(per_source, |v| matches!(v, Verdict::Passed)),
            "failed": count(per_source, |v| matches!(v, Verdict::Failed { .. })),
            "excluded": count(per_source, |v| matches!(v, Verdict::Excluded)),
        }))).collect::<BTreeMap<_, _>>(),
        "failures": failures,
    });
    std::fs::write(report_file, serde_json::to_string_pretty(&report).unwrap()).unwrap();

    let unexpected: Vec<String> = failures
        .iter()
        .filter(|(id, _)| !known.failures.contains_key(id.as_str()))
        .map(|(id, verdict)| format!("{id}: {}", serde_json::to_string(verdict).unwrap()))
        .collect();
    let now_passing: Vec<&String> = known
        .failures
        .keys()
        .filter(|id| !failures.contains_key(id))
        .collect();
    assert!(
        unexpected.is_empty() && now_passing.is_empty(),
        "{} examples fail on {} that are not known failures:\n{}\n\n{} known failures no \
         longer fail: {now_passing:?}\n\nIf this is expected, regenerate {known_failures} and \
         docs/COMPATIBILITY.md with scripts/compat/update-known-failures.sh.",
        unexpected.len(),
        guest.runtime,
        unexpected.join("\n"),
        now_passing.len(),
    );
}

fn count(verdicts: &BTreeMap<String, Verdict>, which: impl Fn(&Verdict) -> bool) -> usize {
    verdicts.values().filter(|verdict| which(verdict)).count()
}

fn percent(passed: usize, failed: usize) -> String {
    let judged = (passed + failed).max(1);
    format!("{:.1}% pass", 100.0 * passed as f64 / judged as f64)
}
