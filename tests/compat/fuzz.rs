//! Differential fuzzing of the guest's compiler, in the long tier (scripts/long-tier.sh): random
//! programs that CPython compiles (scripts/compat/generate_programs.py, hypothesmith) must never
//! end `internal` in the guest. Saves every program that does, and every one the guest rejects
//! as a syntax error although CPython accepts it, under target/tmp/compiler-fuzz/.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use pyexec::sandbox::{ErrorKind, Execution, Limits, Sandbox, SandboxConfig};

use super::{cache_dir, repo_path, show};

/// Small limits: the programs are tiny, and one that loops should end fast.
static FUZZ_SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(SandboxConfig {
        limits: Limits {
            fuel: 500_000_000,
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        cache_dir: Some(cache_dir()),
        pooling: false,
        ..SandboxConfig::default()
    })
    .expect("the sandbox starts")
});

/// Programs the guest rejects although CPython compiles them, saved for reading (not a failure:
/// a fidelity difference, not a crash).
const SAVED_SYNTAX_ERRORS: usize = 50;

#[derive(serde::Deserialize)]
struct Generated {
    code: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: runs for COMPILER_FUZZ_SECONDS (scripts/long-tier.sh)"]
async fn generated_programs_never_end_internal() {
    let seconds = std::env::var("COMPILER_FUZZ_SECONDS").unwrap_or_else(|_| "60".to_owned());
    let seed = std::env::var("COMPILER_FUZZ_SEED").unwrap_or_default();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    tokio::task::spawn_blocking(|| LazyLock::force(&FUZZ_SANDBOX))
        .await
        .unwrap();
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiler-fuzz");
    std::fs::create_dir_all(&out_dir).unwrap();

    let mut generator = Command::new(&python)
        .arg(repo_path("scripts/compat/generate_programs.py"))
        .arg(&seconds)
        .args((!seed.is_empty()).then_some(&seed))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} scripts/compat/generate_programs.py: {e}"));
    let stdout = generator.stdout.take().unwrap();
    let (programs, mut received) = tokio::sync::mpsc::channel::<String>(64);
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let generated: Generated = serde_json::from_str(&line.unwrap()).unwrap();
            if programs.blocking_send(generated.code).is_err() {
                break;
            }
        }
    });

    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut internal = Vec::new();
    let mut syntax_errors = 0;
    let mut total = 0;
    while let Some(code) = received.recv().await {
        total += 1;
        let outcome = FUZZ_SANDBOX
            .execute(Execution {
                code: code.clone(),
                data: None,
                fuel: None,
                tenant: None,
                runtime: None,
            })
            .await
            .expect("the execution is admitted");
        let kind = match &outcome.result {
            Ok(_) => "success".to_owned(),
            Err(error) => format!("{:?}", error.kind),
        };
        *kinds.entry(kind).or_default() += 1;
        match outcome.result.as_ref().map_err(|error| error.kind) {
            Err(ErrorKind::Internal) => {
                let path = out_dir.join(format!("internal-{}.py", internal.len()));
                std::fs::write(&path, &code).unwrap();
                internal.push(path);
            }
            Err(ErrorKind::SyntaxError) => {
                if syntax_errors < SAVED_SYNTAX_ERRORS {
                    let path = out_dir.join(format!("syntax-error-{syntax_errors}.py"));
                    std::fs::write(path, &code).unwrap();
                }
                syntax_errors += 1;
            }
            _ => {}
        }
    }
    reader.join().unwrap();
    let status = generator.wait().unwrap();
    assert!(status.success(), "the program generator failed: {status}");

    show(&format!(
        "compiler fuzz: {total} programs in {seconds} s, outcomes {kinds:?}; {} internal, \
         {syntax_errors} rejected as syntax errors that CPython compiles (saved in {})",
        internal.len(),
        out_dir.display()
    ));
    assert!(total > 0, "the generator produced no programs");
    assert!(
        internal.is_empty(),
        "programs ended `internal`: {internal:?}"
    );
}
