//! The pooling allocator reuses one memory slot per worker and resets it by copying back only
//! the pages an execution dirtied (or `madvise`, past the resident budget): nothing may survive,
//! not even a dirty page the kernel swapped out in between (the long-tier test here, which needs
//! swap; vendor/README.md has the wasmtime change both tests guard).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::time::Duration;

use pyexec::sandbox::{Execution, Limits, POOL_SLOTS, Sandbox, SandboxConfig};
use rustix::mm::Advice;
use serde_json::{Value, json};

use super::{cache_dir, execution, result, test_limits};

/// Dirties more than a slot keeps resident, and state all over the heap: every loaded module's
/// dict is far more than the 32 regions stock wasmtime 48 would reset (vendor/README.md).
const DIRTY_THE_HEAP: &str = "import builtins, json, sys\nbuiltins.leak = 1\njson.dumps = None\n\
    for module in list(sys.modules.values()):\n    module.leak = 1\n\
    sys.modules['leak'] = 1\nblob = bytearray(b'x') * (48 << 20)\nresult = 1";

/// Looks for every trace [`DIRTY_THE_HEAP`] leaves; answers [`pristine`] on a fresh heap.
const LOOK_FOR_LEAKS: &str = "import builtins, json, sys\nresult = [hasattr(builtins, 'leak'), \
    json.dumps is None, 'leak' in sys.modules, 'blob' in globals(), \
    bytearray(1 << 20).count(0), \
    sum(hasattr(m, 'leak') for m in list(sys.modules.values()))]";

fn pristine() -> Value {
    json!([false, false, false, false, 1 << 20, 0])
}

/// A pooling sandbox with one worker, so every execution lands in the same slot.
fn one_slot_sandbox(timeout: Duration) -> Sandbox {
    Sandbox::new(SandboxConfig {
        // Room for the snapshot's ~85 MiB heap plus more than a slot keeps resident.
        limits: Limits {
            memory_bytes: 256 << 20,
            timeout,
            ..test_limits()
        },
        workers: 1,
        queue: 4,
        cache_dir: Some(cache_dir()),
        pooling: true,
        ..SandboxConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_reused_slot_keeps_nothing_of_the_previous_execution() {
    let sandbox = one_slot_sandbox(test_limits().timeout);
    let run = async |code: &str| sandbox.execute(execution(code)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(result(&run(DIRTY_THE_HEAP).await), json!(1));
        assert_eq!(result(&run(LOOK_FOR_LEAKS).await), pristine());
    }
}

/// Long tier: while an execution sleeps after dirtying its heap, every page of its slot is
/// pushed to swap (`MADV_PAGEOUT`). Its dirty pages are then `WRITTEN | SWAPPED` but not
/// `PRESENT`, which wasmtime 48.0.8's reset skipped: neither copied back nor decommitted, they
/// were what the next execution in the slot found. Needs swap (scripts/long-tier.sh sets up a
/// swap file when the machine has none and it runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: needs swap, scripts/long-tier.sh"]
async fn a_dirty_page_swapped_out_mid_execution_is_reset_too() {
    let sandbox = one_slot_sandbox(Duration::from_secs(30));
    // Warm the slot once, so the measured execution is not the slot's first.
    assert_eq!(
        result(&sandbox.execute(execution("result = 1")).await.unwrap()),
        json!(1)
    );
    let dirty_then_sleep = format!("{DIRTY_THE_HEAP}\nimport time\ntime.sleep(6)");
    let first = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.execute(execution(dirty_then_sleep)).await.unwrap() }
    });
    // Page the slot out until all of the 48 MiB blob is in swap, that is once the execution
    // has dirtied everything and gone to sleep (a page it writes after a pass faults back in).
    let blob_pages = (48 << 20) / rustix::param::page_size();
    let mut swapped = 0;
    while swapped < blob_pages && !first.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        swapped = page_out_wasm_memory();
    }
    assert!(
        swapped >= blob_pages,
        "only {swapped} pages of the slot went to swap: this test needs swap (swapon)"
    );
    assert!(
        !first.is_finished(),
        "the execution ended before its slot was paged out"
    );
    assert_eq!(result(&first.await.unwrap()), json!(1));
    let next = sandbox.execute(execution(LOOK_FOR_LEAKS)).await.unwrap();
    assert_eq!(result(&next), pristine());
}

/// Pushes every writable page of wasmtime's pooling reservations to swap, and returns how many
/// pages of them are then in swap. A reservation is found as a run of adjacent mappings of more
/// than 64 GiB (the pool reserves 4 GiB and guards for each of its 64 slots), so nothing but
/// wasm memories and tables is touched.
fn page_out_wasm_memory() -> usize {
    let writable = pool_reservations()
        .into_iter()
        .flatten()
        .filter(|mapping| mapping.writable)
        .map(|mapping| mapping.range)
        .collect::<Vec<_>>();
    for range in &writable {
        page_out(range);
    }
    writable.iter().map(swapped_pages).sum()
}

struct Mapping {
    range: Range<usize>,
    writable: bool,
}

/// `/proc/self/maps`, grouped into runs of adjacent mappings, keeping the runs over 64 GiB.
fn pool_reservations() -> Vec<Vec<Mapping>> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let mut runs: Vec<Vec<Mapping>> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next().unwrap().split_once('-').unwrap();
        let range =
            usize::from_str_radix(start, 16).unwrap()..usize::from_str_radix(end, 16).unwrap();
        let writable = fields.next().unwrap().starts_with("rw");
        match runs.last_mut() {
            Some(run) if run.last().unwrap().range.end == range.start => {
                run.push(Mapping { range, writable });
            }
            _ => runs.push(vec![Mapping { range, writable }]),
        }
    }
    runs.retain(|run| run.last().unwrap().range.end - run[0].range.start > 64 << 30);
    runs
}

#[allow(unsafe_code)]
fn page_out(range: &Range<usize>) {
    // SAFETY: MADV_PAGEOUT only asks the kernel to reclaim the pages now; their contents are
    // kept (written to swap), so the running guest and the allocator see no difference.
    unsafe { rustix::mm::madvise(range.start as *mut _, range.len(), Advice::LinuxPageOut) }
        .expect("madvise(MADV_PAGEOUT)");
}

/// Pages of `range` in swap, from `/proc/self/pagemap` (bit 62 of each page's entry).
fn swapped_pages(range: &Range<usize>) -> usize {
    let mut pagemap = fs::File::open("/proc/self/pagemap").unwrap();
    pagemap
        .seek(SeekFrom::Start(
            (range.start / rustix::param::page_size() * 8) as u64,
        ))
        .unwrap();
    let mut entries = vec![0u8; range.len() / rustix::param::page_size() * 8];
    pagemap.read_exact(&mut entries).unwrap();
    entries
        .chunks_exact(8)
        .filter(|entry| u64::from_le_bytes((*entry).try_into().unwrap()) & (1 << 62) != 0)
        .count()
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
        ..SandboxConfig::default()
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
                    runtime: None,
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
