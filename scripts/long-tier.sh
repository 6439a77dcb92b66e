#!/usr/bin/env bash
# The long test tier (the fast tier is `cargo test`, run by CI):
#   1. the ignored long tests (RSS over 10,000 executions; a pooled slot paged out to swap,
#      with a temporary swap file when there is none and it runs as root), release build;
#   2. the property tests with many cases and a random seed;
#   3. coverage-guided fuzzing of POST /execute with cargo-fuzz (nightly);
#   4. the playground in headless Chromium (scripts/browser-test.sh);
#   5. differential fuzzing of the guest's compiler: random programs CPython compiles
#      (hypothesmith) must never end `internal` (tests/compat/fuzz.rs).
# Knobs: PROPTEST_CASES (default 3000), FUZZ_SECONDS (default 1800, also for step 5),
# COMPILER_FUZZ_SECONDS (step 5 alone), SKIP_FUZZ=1, SKIP_BROWSER=1.
# Installs what it needs (nightly toolchain's cargo-fuzz; Chromium and playwright-core via
# scripts/browser-test.sh; hypothesmith from PyPI). Prints a summary; record it in SECURITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
cache="$root/target/tmp/module-cache"
summary="$root/target/artifacts/long-tier-summary.txt"
mkdir -p "$root/target/artifacts" "$cache"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
note "long tier on $(uname -n), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"

echo "== 1. long tests (release)"
cargo test --release --locked --test hardening -- --ignored --nocapture 2>&1 | tee target/artifacts/long-tests.log
grep -E "^RSS|test result" target/artifacts/long-tests.log | sed 's/^/   /' | tee -a "$summary"
# A pooled slot whose dirty pages were swapped out must still be reset (vendor/README.md): that
# test needs swap, so a root run without any makes a temporary swap file for it.
if [ "$(wc -l < /proc/swaps)" -le 1 ] && [ "$(id -u)" = 0 ]; then
    swapfile="$root/target/tmp/long-tier.swap"
    if fallocate -l 1G "$swapfile" && chmod 600 "$swapfile" && mkswap -q "$swapfile" &&
        swapon "$swapfile"; then
        trap 'swapoff "$swapfile"; rm -f "$swapfile"' EXIT
    else
        note "   could not enable swap here: the swapped-out slot test will fail"
    fi
fi
cargo test --release --locked --test sandbox swapped_out -- --ignored 2>&1 | tee target/artifacts/swap-test.log
note "   swapped-out slot: $(grep 'test result' target/artifacts/swap-test.log | tail -1)"

echo "== 2. property tests, many cases"
cases="${PROPTEST_CASES:-3000}"
seed="${PROPTEST_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
PYEXEC_PROPTEST_CASES="$cases" PYEXEC_PROPTEST_SEED="$seed" \
    cargo test --release --locked --test hardening properties 2>&1 | tee target/artifacts/properties.log
note "   properties: $cases cases each, seed $seed: $(grep 'test result' target/artifacts/properties.log | tail -1)"

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "== 3. fuzzing POST /execute"
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    seconds="${FUZZ_SECONDS:-1800}"
    mkdir -p target/fuzz-corpus/execute_body
    status=0
    PYEXEC_MODULE_CACHE_DIR="$cache" PYEXEC_LOG=off \
        cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none execute_body \
        target/fuzz-corpus/execute_body fuzz/seeds/execute_body -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
        2>&1 | tee target/artifacts/fuzz.log || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' target/artifacts/fuzz.log | grep -o '[0-9]*$' || echo "?")
    note "   fuzz execute_body: ${seconds}s, $runs inputs, exit $status, corpus $(ls target/fuzz-corpus/execute_body | wc -l) files"
    [ "$status" = 0 ] || note "   fuzz found a failure: see target/artifacts/fuzz.log and fuzz/artifacts/"
fi

if [ "${SKIP_BROWSER:-0}" != 1 ]; then
    echo "== 4. playground in Chromium"
    scripts/browser-test.sh 2>&1 | tee target/artifacts/browser-test.log
    note "   browser: $(tail -1 target/artifacts/browser-test.log)"
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "== 5. compiler fuzzing (hypothesmith programs must never end internal)"
    python3 -m pip install --quiet --disable-pip-version-check hypothesmith==0.3.3
    status=0
    COMPILER_FUZZ_SECONDS="${COMPILER_FUZZ_SECONDS:-${FUZZ_SECONDS:-1800}}" \
        cargo test --release --locked --test compat generated_programs_never_end_internal \
        -- --ignored --nocapture 2>&1 | tee target/artifacts/compiler-fuzz.log || status=$?
    note "   $(grep '^compiler fuzz:' target/artifacts/compiler-fuzz.log || echo 'compiler fuzz: no summary'), exit $status"
fi

echo
cat "$summary"
