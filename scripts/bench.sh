#!/usr/bin/env bash
# pyexec's benchmark suite (issue 7), one command from a fresh clone:
#
#   scripts/bench.sh          # in-process (cargo bench) + HTTP, ~10 minutes on 2 cores
#   scripts/bench.sh http     # HTTP only (reuses the last in-process summary, if any)
#
# Installs what it needs (wrk, python3 from Debian's packages), runs `cargo bench --bench
# sandbox`, builds the release binary, runs the HTTP benchmarks against `pyexec serve` and
# against the naive `python3 -I -c`-per-request baseline in the same invocation, prints the
# results table and writes it to benches/RESULTS.md (raw numbers: benches/RESULTS.json).
# Settings: BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_GROWTH_EXECUTIONS, BENCH_WARM_STARTS
# (see scripts/bench_http.py). With PYEXEC_TEST_CPYTHON_DIR naming a data directory the CPython
# runtime is installed in (as for the tests), both halves measure it too (issue 13).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
case "$mode" in
    all | http) ;;
    *) echo "usage: $0 [all|http]" >&2; exit 2 ;;
esac

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
fi

target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
if [ "$mode" = all ]; then
    cargo bench --locked --bench sandbox
fi
cargo build --locked --release
python3 scripts/bench_http.py "$target_dir/release/pyexec" "$target_dir/tmp/bench-inprocess.json" \
    benches/RESULTS.md "scripts/bench.sh${1:+ $1}"
