//! Pre-initialises the pyexec guest: runs its `wizer-initialize` export under wasmtime-wizer and
//! writes the snapshot.
//!
//! Usage: `pyexec-snapshot <guest.wasm> <snapshot.wasm>` (guest/build.sh runs it).
//!
//! The initialisation sees a deterministic world (fixed clocks, seeded randomness, no
//! environment, arguments or files) so that the same guest always gives the same snapshot, and
//! the snapshot holds nothing of the machine that built it.

use std::time::Duration;

use anyhow::{Context, bail};
use rand::{SeedableRng, rngs::StdRng};
use wasmtime::{Caller, Config, Engine, Linker, Store};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtxBuilder,
    p1::{self, WasiP1Ctx},
};
use wasmtime_wizer::Wizer;

/// Pre-initialisation runs warm-up code that recurses as deep as user code may.
const WASM_STACK: usize = 16 << 20;

/// A clock that never moves: 2024-01-01T00:00:00Z.
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(1_704_067_200)
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        bail!("usage: pyexec-snapshot <guest.wasm> <snapshot.wasm>");
    };
    let wasm = std::fs::read(input).with_context(|| format!("reading {input}"))?;

    let mut config = Config::new();
    config.max_wasm_stack(WASM_STACK);
    config.async_stack_size(2 * WASM_STACK);
    let engine = Engine::new(&config)?;

    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    p1::add_to_linker_async(&mut linker, |wasi| wasi)?;
    // The reply import is the host's: initialisation replies only when it panics, and then the
    // reply carries the panic's text.
    linker.func_wrap(
        "pyexec",
        "reply",
        |mut caller: Caller<'_, WasiP1Ctx>, ptr: u32, len: u32| -> wasmtime::Result<()> {
            let mut reply = vec![0; len as usize];
            if let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) {
                memory.read(&caller, ptr as usize, &mut reply)?;
            }
            wasmtime::bail!(
                "the guest replied during pre-initialisation: {}",
                String::from_utf8_lossy(&reply)
            )
        },
    )?;

    let wasi = WasiCtxBuilder::new()
        .inherit_stderr()
        .secure_random(StdRng::seed_from_u64(0x7079_6578_6563))
        .insecure_random(StdRng::seed_from_u64(0x7079_6578_6563))
        .insecure_random_seed(0)
        .wall_clock(FixedClock)
        .monotonic_clock(FixedClock)
        .build_p1();
    let mut store = Store::new(&engine, wasi);

    let snapshot = Wizer::new()
        .run(&mut store, &wasm, async |store, module| {
            linker.instantiate_async(store, module).await
        })
        .await
        .map_err(anyhow::Error::from)
        .context("pre-initialising the guest")?;
    std::fs::write(output, snapshot).with_context(|| format!("writing {output}"))?;
    Ok(())
}
