#!/usr/bin/env bash
# Long tier: the playground (`GET /`) in a real headless Chromium, driven by Playwright.
#
# Installs what it lacks (Debian's `chromium`; `playwright-core` from npm into
# target/browser-test/), builds pyexec (release, in cargo's target directory: CARGO_TARGET_DIR
# is honoured), starts `pyexec serve` on a free port with a fresh data directory, runs
# tests/browser/playground.mjs against it, and stops the server.
# Screenshots go to target/artifacts/. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
chromium=/usr/bin/chromium
playwright_version=1.65.1
tools=$root/target/browser-test
artifacts=$root/target/artifacts
mkdir -p "$tools" "$artifacts"

if [ ! -x "$chromium" ]; then
    echo "== installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if [ "$(node -p "require('$tools/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$playwright_version" ]; then
    echo "== installing playwright-core $playwright_version"
    npm install --prefix "$tools" --no-audit --no-fund --no-save --loglevel=error \
        "playwright-core@$playwright_version"
fi

echo "== building pyexec (release)"
cargo build --release --locked --bin pyexec
pyexec="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/pyexec"

data_dir=$(mktemp -d)
server_log=$artifacts/browser-test-server.log
server=
cleanup() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap cleanup EXIT

echo "== starting pyexec serve"
PYEXEC_LOG=warn "$pyexec" serve --addr 127.0.0.1:0 --data-dir "$data_dir" \
    --module-cache-dir "$tools/module-cache" >"$server_log" 2>&1 &
server=$!
base=
for _ in $(seq 600); do
    base=$(sed -n 's/^pyexec listening on \(http:[^ ]*\)$/\1/p' "$server_log")
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$server_log"; echo "pyexec serve exited" >&2; exit 1; }
    sleep 0.2
done
[ -n "$base" ] || { cat "$server_log"; echo "pyexec serve did not start in 120 s" >&2; exit 1; }
key=$(grep -oE 'sk_test_[A-Za-z0-9]{40}' "$server_log" | head -n 1)
[ -n "$key" ] || { cat "$server_log"; echo "no first-run key in the server's output" >&2; exit 1; }
echo "   listening on $base"

echo "== playground in chromium"
PYEXEC_URL=$base PYEXEC_KEY=$key PLAYWRIGHT_DIR=$tools CHROMIUM=$chromium ARTIFACTS=$artifacts \
    node tests/browser/playground.mjs
