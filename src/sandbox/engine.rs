//! The wasmtime engine and compiled guest modules, with the on-disk cache that makes a warm
//! start take milliseconds instead of the ~11 s Cranelift needs for the 40 MB guest.

use std::borrow::Cow;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::{Config, Engine, Module, OptLevel};

/// Wasm stack the guest may use. The guest's shadow stack (8 MiB, in linear memory) and this
/// are sized together so that Python's recursion limit (1000) is reached first even through
/// `functools.cache` wrappers; see assets/README.md for the measurement.
pub const MAX_WASM_STACK: usize = 8 << 20;

/// Initial heaps up to this size always get a copy-on-write image.
const GUARANTEED_DENSE_IMAGE: u64 = 256 << 20;

/// Bytes of a pooled memory (and table) slot kept resident between executions. When an
/// instance ends, the `PAGEMAP_SCAN` ioctl (Linux 6.7+) finds the pages it dirtied and, up to
/// this much, they are copied back from the image and stay mapped instead of being `madvise`d
/// away and faulted in again by the next execution (with the vendored wasmtime, which reads
/// all of an interpreter's scattered dirty regions: vendor/README.md). Bounds both the RSS a
/// worker holds beyond the shared image and the bytes copied back per execution.
const KEEP_RESIDENT: usize = 32 << 20;

/// Memory slots of the pooling allocator for executions: one per worker, so at most this many
/// workers pool (`Sandbox::new` falls back to on-demand allocation beyond it). Open sessions
/// each hold one more (`SessionConfig::max_open`).
pub const POOL_SLOTS: usize = 64;

/// The configuration every runtime's engine starts from: fuel, epochs, the wasm stack,
/// Cranelift and copy-on-write images. A runtime switches the wasm proposals its guest uses on
/// or off and hands it to [`build`].
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        // Unused (executions are synchronous) but checked against max_wasm_stack.
        .async_stack_size(MAX_WASM_STACK + (1 << 20))
        .cranelift_opt_level(OptLevel::Speed)
        // The snapshot's heap spans ~85 MiB, sparsely: without this, wasmtime skips the
        // copy-on-write image and copies 10,000 data segments into every instance (~25 ms).
        .memory_guaranteed_dense_image_size(GUARANTEED_DENSE_IMAGE);
    config
}

/// The pooling allocator's settings every runtime shares: `slots` instances (their number is
/// not part of the compiled code, nor of the cache key), memories of up to 4 GiB, and the
/// dirty-page reset (`PAGEMAP_SCAN`) keeping [`KEEP_RESIDENT`].
pub fn pool(slots: usize) -> wasmtime::PoolingAllocationConfig {
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_memories(slots)
        .total_tables(slots)
        .total_core_instances(slots)
        .max_memory_size(1 << 32)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    pool
}

/// Builds a runtime's engine from its `config` (see [`config`]), with the pooling allocator
/// `pool` (see [`pool`]) or memory mapped on demand, and the cache key of what it compiles.
pub fn build(
    mut config: Config,
    pool: Option<wasmtime::PoolingAllocationConfig>,
) -> anyhow::Result<(Engine, u64)> {
    if let Some(pool) = pool {
        config.allocation_strategy(pool);
    }
    let engine = Engine::new(&config)?;
    // wasmtime's compatibility hash leaves out settings that change the compiled artefact
    // (how memory is initialised, for one); the whole configuration goes into the key.
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{config:?}").hash(&mut hasher);
    Ok((engine, hasher.finish()))
}

/// Compiles the guest module that `wasm` gives, or loads it from `cache_dir` when an earlier
/// run compiled it with a compatible engine; `sha256` (hex, of the module) names it in the
/// cache, so `wasm` (which may read a 150 MB file) is called only to compile. A cache file
/// that fails to load is replaced.
pub fn load_guest<'a>(
    engine: &Engine,
    engine_key: u64,
    wasm: impl FnOnce() -> anyhow::Result<Cow<'a, [u8]>>,
    sha256: &str,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Module> {
    let Some(cache_dir) = cache_dir else {
        return compile(engine, &wasm()?);
    };
    let path = cache_path(cache_dir, engine_key, sha256);
    if let Some(module) = load_cached(engine, &path) {
        return Ok(module);
    }
    let module = compile(engine, &wasm()?)?;
    if let Err(err) = store(&module, cache_dir, &path) {
        tracing::warn!(path = %path.display(), "could not cache the compiled module: {err:#}");
        return Ok(module);
    }
    // Cranelift's ~500 MiB of working memory is freed by now, but the allocator keeps much of
    // it, and the compiled code sits in anonymous memory: load the module from the cache as a
    // warm start does (a file mapping, paged in as used) and hand the freed memory back. Only a
    // compile in another process (`pyexec compile`, which `serve` runs) gives all of it back.
    drop(module);
    return_freed_memory();
    deserialize(engine, &path)
}

/// Makes sure `cache_dir` holds the compiled guest for this engine, compiling it if not;
/// returns the file and whether it had to compile.
pub fn fill_cache(
    engine: &Engine,
    engine_key: u64,
    wasm: &[u8],
    sha256: &str,
    cache_dir: &Path,
) -> anyhow::Result<(PathBuf, bool)> {
    let path = cache_path(cache_dir, engine_key, sha256);
    if load_cached(engine, &path).is_some() {
        return Ok((path, false));
    }
    store(&compile(engine, wasm)?, cache_dir, &path)?;
    Ok((path, true))
}

/// Where the guest `sha256` compiled by the engine `engine_key` is cached.
pub fn cache_path(cache_dir: &Path, engine_key: u64, sha256: &str) -> PathBuf {
    let guest = sha256.get(..16).unwrap_or("unknown");
    cache_dir.join(format!("python-{guest}-{engine_key:016x}.cwasm"))
}

/// The cached module at `path`, if there is one that loads.
fn load_cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    deserialize(engine, path)
        .inspect_err(|err| {
            tracing::warn!(
                path = %path.display(),
                "discarding unusable compiled-module cache: {err:#}"
            );
        })
        .ok()
}

/// Returns the allocator's free memory to the operating system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    unsafe extern "C" {
        /// glibc: releases free memory at the top of each arena and every whole free page
        /// inside it (`madvise(MADV_DONTNEED)`).
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and only gives back memory no allocation uses.
    unsafe { malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

fn compile(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Module> {
    let started = std::time::Instant::now();
    let module = Module::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("compiling the guest module")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled the guest module"
    );
    Ok(module)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Module> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. The cache lives in
    // the data directory, which is created private to the service's user (0700) and also holds
    // the key database: whoever can write it already controls the service. wasmtime still
    // checks the file's header, version and engine compatibility.
    Ok(unsafe { Module::deserialize_file(engine, path) }?)
}

fn store(module: &Module, cache_dir: &Path, path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let bytes = module.serialize()?;
    // Write-then-rename, so concurrent starts (or test binaries) never see a partial file.
    let partial = cache_dir.join(format!(
        ".partial-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = fs::File::create(&partial)
        .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&partial, path));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written.with_context(|| format!("writing {}", path.display()))
}
