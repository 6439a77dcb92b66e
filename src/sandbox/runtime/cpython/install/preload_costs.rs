//! What each pre-loaded package costs, for choosing what the snapshot imports: snapshots of the
//! wheel's `python.wasm` that pre-load the standard library's modules alone, then numpy,
//! pandas and matplotlib added one by one (the last is what `install` builds), with their size
//! and build time; and, on the first and the last, what executions cost (the example, numpy,
//! each package's import) — what an execution pays for a package that is not pre-loaded, and
//! what pre-loading them all adds to every execution. Ignored: it takes minutes and needs the
//! wheel and an installation, named as for tests/cpython; run it with a release build:
//!
//! ```text
//! PYEXEC_TEST_CPYTHON_DIR=… PYEXEC_TEST_WHEEL=… \
//!     cargo test --release --lib preload_costs -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::*;
use crate::sandbox::{Execution, Limits, Sandbox, SandboxConfig};

/// Runs of each fast case, and of each import that was not pre-loaded (≈ seconds each).
const RUNS: usize = 21;
const IMPORT_RUNS: usize = 3;

const PACKAGES: [&str; 3] = ["numpy", "pandas", "matplotlib"];

#[test]
#[ignore = "minutes of snapshotting and compiling; run by hand (see the module's doc)"]
fn preload_costs() {
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let installation = PathBuf::from(var("PYEXEC_TEST_CPYTHON_DIR")).join("runtimes");
    let installed = Installed::open(&installation)
        .unwrap()
        .expect("the CPython runtime is installed");
    let mut archive = zip::ZipArchive::new(File::open(var("PYEXEC_TEST_WHEEL")).unwrap()).unwrap();
    let sums = read_sums(&mut archive).unwrap();
    let python_wasm = unpack(&mut archive, &sums, "python.wasm", None).unwrap();

    let stdlib_only: String = snapshot::PRELOAD
        .lines()
        .filter(|line| !PACKAGES.iter().any(|package| line.contains(package)))
        .map(|line| format!("{line}\n"))
        .collect();
    let variants = [
        ("standard library modules only", stdlib_only.clone()),
        ("+ numpy", format!("{stdlib_only}import numpy\n")),
        ("+ pandas", format!("{stdlib_only}import numpy, pandas\n")),
        (
            "+ matplotlib (what install builds)",
            snapshot::PRELOAD.to_owned(),
        ),
    ];

    let started = Instant::now();
    let instrumented = snapshot::Instrumented::new(&python_wasm).unwrap();
    println!(
        "instrumenting and compiling python.wasm: {:.0} s\n",
        started.elapsed().as_secs_f64()
    );
    println!("| pre-loaded | snapshot | pre-initialising and snapshotting |\n|---|---:|---:|");
    let tmp = tempfile::tempdir().unwrap();
    let mut runtimes_dirs = Vec::new();
    for (i, (name, preload)) in variants.iter().enumerate() {
        let runtimes_dir = tmp.path().join(format!("variant-{i}"));
        let started = Instant::now();
        let bytes = variant(&installed, &instrumented, preload, &runtimes_dir);
        println!(
            "| {name} | {:.1} MB | {:.1} s |",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        runtimes_dirs.push(runtimes_dir);
    }
    drop(instrumented);

    let cases: [(&str, &str, usize); 5] = [
        ("`pass`", "pass", RUNS),
        (
            "the prototype's example",
            "result = sum(data['numbers']) / len(data['numbers'])",
            RUNS,
        ),
        (
            "`import numpy as np; result = float(np.linspace(0, 1, 1000).std())`",
            "import numpy as np\nresult = float(np.linspace(0, 1, 1000).std())",
            IMPORT_RUNS,
        ),
        ("`import pandas`", "import pandas", IMPORT_RUNS),
        (
            "`import matplotlib.pyplot`",
            "import matplotlib.pyplot",
            IMPORT_RUNS,
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let measured: Vec<Vec<Result<(Duration, u64), String>>> =
        [&runtimes_dirs[0], &runtimes_dirs[3]]
            .into_iter()
            .map(|runtimes_dir| {
                let sandbox = Sandbox::new(SandboxConfig {
                    limits: Limits {
                        fuel: 200_000_000_000,
                        timeout: Duration::from_secs(120),
                        ..Limits::default()
                    },
                    runtimes_dir: Some(runtimes_dir.clone()),
                    cache_dir: Some(tmp.path().join("cache")),
                    workers: 1,
                    ..SandboxConfig::default()
                })
                .unwrap();
                cases
                    .iter()
                    .map(|(_, code, runs)| runtime.block_on(median(&sandbox, code, *runs)))
                    .collect()
            })
            .collect();
    println!(
        "\n| execution (fresh instance, pooled) | standard library only: p50, fuel | \
         everything pre-loaded: p50, fuel |\n|---|---:|---:|"
    );
    let cell = |measured: &Result<(Duration, u64), String>| match measured {
        Ok((took, fuel)) => format!(
            "{:.2} ms, {:.2} M",
            took.as_secs_f64() * 1e3,
            *fuel as f64 / 1e6
        ),
        Err(failed) => failed.clone(),
    };
    for (i, (name, _, _)) in cases.iter().enumerate() {
        println!(
            "| {name} | {} | {} |",
            cell(&measured[0][i]),
            cell(&measured[1][i])
        );
    }
    // Everything pre-loaded, everything runs.
    assert!(measured[1].iter().all(Result::is_ok), "{:?}", measured[1]);
}

/// Builds the snapshot pre-loading `preload` into an installation under `runtimes_dir` that a
/// sandbox loads like the real one; returns the snapshot's size.
fn variant(
    installed: &Installed,
    instrumented: &snapshot::Instrumented,
    preload: &str,
    runtimes_dir: &Path,
) -> usize {
    let dir = runtimes_dir.join(DIR_NAME);
    let stdlib_zip = dir.join(STDLIB_FILE);
    fs::create_dir_all(stdlib_zip.parent().unwrap()).unwrap();
    // A copy, since pre-initialising writes matplotlib's font cache beside it.
    fs::copy(installed.dir.join(STDLIB_FILE), &stdlib_zip).unwrap();
    std::os::unix::fs::symlink(installed.mpl_data_dir(), dir.join(MPL_DATA_DIR)).unwrap();
    let snapshot = instrumented
        .snapshot(&stdlib_zip, &dir.join(MPL_DATA_DIR), preload)
        .unwrap();
    fs::write(dir.join(SNAPSHOT_FILE), &snapshot).unwrap();
    let manifest = Manifest {
        snapshot_sha256: hex::encode(Sha256::digest(&snapshot)),
        snapshot_bytes: snapshot.len() as u64,
        ..installed.manifest.clone()
    };
    fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    snapshot.len()
}

/// The median duration and fuel of `runs` executions of `code`, or how the first one failed.
async fn median(sandbox: &Sandbox, code: &str, runs: usize) -> Result<(Duration, u64), String> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let outcome = sandbox
            .execute(Execution {
                code: code.into(),
                data: Some(
                    RawValue::from_string(r#"{"numbers": [1, 2, 3, 4, 5]}"#.into()).unwrap(),
                ),
                fuel: None,
                tenant: None,
                runtime: Some("cpython".into()),
            })
            .await
            .unwrap();
        if let Err(error) = outcome.result {
            let gist = error.message.split(',').next().unwrap_or_default();
            return Err(format!("fails: {}: {gist}", error.type_name));
        }
        samples.push((outcome.duration, outcome.fuel_used));
    }
    samples.sort();
    Ok(samples[runs / 2])
}
