//! The pooling allocator reuses one memory slot per worker and resets it by copying back only
//! the pages an execution dirtied (or `madvise`, past the resident budget): nothing may survive.

use pyexec::sandbox::{Execution, Limits, POOL_SLOTS, Sandbox, SandboxConfig};
use serde_json::json;

use super::{cache_dir, execution, result, test_limits};

#[tokio::test]
async fn a_reused_slot_keeps_nothing_of_the_previous_execution() {
    // One worker: every execution lands in the same slot.
    let sandbox = Sandbox::new(SandboxConfig {
        // Room for the snapshot's ~85 MiB heap plus more than a slot keeps resident.
        limits: Limits {
            memory_bytes: 256 << 20,
            ..test_limits()
        },
        workers: 1,
        queue: 4,
        cache_dir: Some(cache_dir()),
        pooling: true,
    })
    .unwrap();
    let run = async |code: &str| sandbox.execute(execution(code)).await.unwrap();
    for _ in 0..3 {
        // Dirties more than the slot keeps resident, and state all over the heap: every
        // loaded module's dict is far more than the 32 regions stock wasmtime would reset
        // (vendor/README.md).
        let dirty = "import builtins, json, sys\nbuiltins.leak = 1\njson.dumps = None\n\
                     for module in list(sys.modules.values()):\n    module.leak = 1\n\
                     sys.modules['leak'] = 1\nblob = bytearray(b'x') * (48 << 20)\nresult = 1";
        assert_eq!(result(&run(dirty).await), json!(1));
        let check = "import builtins, json, sys\nresult = [hasattr(builtins, 'leak'), \
                     json.dumps is None, 'leak' in sys.modules, 'blob' in globals(), \
                     bytearray(1 << 20).count(0), \
                     sum(hasattr(m, 'leak') for m in list(sys.modules.values()))]";
        assert_eq!(
            result(&run(check).await),
            json!([false, false, false, false, 1 << 20, 0])
        );
    }
}

#[tokio::test]
async fn more_workers_than_pooled_slots_all_run_at_once() {
    let workers = POOL_SLOTS + 1;
    let sandbox = Sandbox::new(SandboxConfig {
        limits: test_limits(),
        workers,
        queue: 4,
        cache_dir: Some(cache_dir()),
        pooling: true,
    })
    .unwrap();
    // Each execution sleeps, so all of them hold an instance at the same time.
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..workers {
        let sandbox = sandbox.clone();
        runs.spawn(async move {
            let outcome = sandbox
                .execute(Execution {
                    tenant: Some(format!("tenant-{i}")),
                    ..execution(format!("import time\ntime.sleep(0.5)\nresult = {i}"))
                })
                .await
                .unwrap();
            (i, outcome)
        });
    }
    while let Some(run) = runs.join_next().await {
        let (i, outcome) = run.unwrap();
        assert_eq!(result(&outcome), json!(i));
    }
}
