#!/usr/bin/env bash
# Rebuilds assets/python.wasm, the pre-initialised guest, from the source in this directory:
#   1. compiles the RustPython guest for wasm32-wasip1 (release, LTO),
#   2. pre-initialises it with wasmtime-wizer (snapshot/), in a deterministic WASI world,
#   3. writes assets/python.wasm and assets/python.wasm.sha256.
# The unsnapshotted module is kept at target/guest/python-unsnapshotted.wasm (repository root)
# for the cold-start benchmark; it is never embedded in the binary.
# Paths are remapped so the result does not depend on where the checkout or cargo home live.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
cd "$here"

rustup target add wasm32-wasip1 >/dev/null 2>&1 || true

remap="['--remap-path-prefix=$cargo_home=/cargo', '--remap-path-prefix=$here=/guest']"
cargo build --release --locked --ignore-rust-version --target wasm32-wasip1 -p pyexec-guest \
    --config "target.wasm32-wasip1.rustflags=$remap"

# The snapshot tool is a host program; it needs no LTO and unwinds on panic.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_PANIC=unwind \
    cargo build --release --locked -p pyexec-snapshot

plain="$here/target/wasm32-wasip1/release/pyexec_guest.wasm"
mkdir -p "$root/target/guest"
cp "$plain" "$root/target/guest/python-unsnapshotted.wasm"
"$here/target/release/pyexec-snapshot" "$plain" "$root/assets/python.wasm"
(cd "$root/assets" && sha256sum python.wasm > python.wasm.sha256)
ls -l "$root/assets/python.wasm"
cat "$root/assets/python.wasm.sha256"
