#!/usr/bin/env bash
# Builds kubypass and runs every test of the workspace. As root on a fresh Debian 12
# machine: sets the host up first (scripts/setup-host.sh). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh

echo "== build"
cargo build --workspace --all-targets

echo "== test"
# The appliance tests spawn DPDK processes with busy-polling lcores; they serialise
# among themselves, so the default test threading is fine.
cargo test --workspace

if cargo clippy --version >/dev/null 2>&1; then
    echo "== clippy"
    cargo clippy --workspace --all-targets -- -D warnings
else
    echo "== clippy not installed; skipped"
fi
