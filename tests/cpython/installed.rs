//! Finding the installed CPython runtime the tests run on (shared by the `cpython` and
//! `hardening` test binaries).

use std::path::PathBuf;

/// The directory holding an installed runtime (`runtimes/`) and its module cache (`cache/`),
/// named by `PYEXEC_TEST_CPYTHON_DIR`; `None` outside CI when there is none, a panic in CI.
pub fn installed() -> Option<PathBuf> {
    match std::env::var_os("PYEXEC_TEST_CPYTHON_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI must install the CPython runtime and set PYEXEC_TEST_CPYTHON_DIR (.ci/run)")
        }
        None => {
            eprintln!("skipped: PYEXEC_TEST_CPYTHON_DIR names no installed CPython runtime");
            None
        }
    }
}
