#!/usr/bin/env bash
# Runs the compatibility suite against the current guest (assets/python.wasm) and regenerates
# from its report tests/compat/known_failures.json, docs/COMPATIBILITY.md and the README's pass
# rate, then runs the suite again to show it passes with the new list.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --locked --test compat every_example_behaves_as_in_cpython || true
python3 scripts/compat/known_failures.py
cargo test --locked --test compat every_example_behaves_as_in_cpython
