#!/usr/bin/env bash
# Builds kubypass and runs every test of the workspace. As root on a fresh Debian 12
# machine: sets the host up first (scripts/setup-host.sh). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh

echo "== build"
cargo build --workspace --all-targets

echo "== fuzz target builds (run it with: cargo +nightly fuzz run process)"
# Not a workspace member: checked on its own so that API changes cannot leave it broken.
cargo check --manifest-path fuzz/Cargo.toml

echo "== test"
# The appliance tests spawn DPDK processes with busy-polling lcores; they serialise
# among themselves, so the default test threading is fine.
cargo test --workspace

echo "== end to end: real clients through the appliance in network namespaces"
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/kubypass"
e2e() {
    local workers=$1 config=$2
    echo "-- $workers worker(s): $config"
    KBP_WORKERS=$workers KBP_ADMIN_URL=http://127.0.0.1:10256 \
        KUBYPASS_CMD="$bin run --config $PWD/$config --manifests \$KBP_MANIFESTS" \
        bash tests/e2e/run.sh
}
e2e 1 deploy/examples/lab.yaml
e2e 2 tests/e2e/kubypass-2workers.yaml

if cargo clippy --version >/dev/null 2>&1; then
    echo "== clippy"
    cargo clippy --workspace --all-targets -- -D warnings
else
    echo "== clippy not installed; skipped"
fi
