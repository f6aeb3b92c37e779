#!/usr/bin/env bash
# scripts/miri.sh — runs the table publication tests (control/src/publish.rs) under Miri,
# which checks every memory access of the run for use after free and every pair of
# unsynchronised accesses for a data race: the stress test's "no reader ever sees a torn
# or freed table", checked by the interpreter as well as by the values readers see.
# Under Miri the stress test publishes 12 tables instead of 10,000 (a few minutes on a
# 2-core VM), which is why scripts/test.sh does not run it.
#
# Needs the nightly toolchain with the miri and rust-src components:
#   rustup component add --toolchain nightly miri rust-src
# Isolation is off (MIRIFLAGS) because the publisher records the wall-clock time of each
# publication for its metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri is not installed: rustup component add --toolchain nightly miri rust-src" >&2
    exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/miri-build"
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
exec cargo +nightly miri test -p kubypass-control --lib -- publish:: "$@"
