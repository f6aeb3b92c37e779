#!/usr/bin/env bash
# scripts/miri.sh — runs the tests of table publication and retirement under Miri, which
# checks every memory access of the run for use after free and every pair of
# unsynchronised accesses for a data race:
#   - control/src/publish.rs: the stress test's "no reader ever sees a torn or freed
#     table", checked by the interpreter as well as by the values readers see (under
#     Miri it publishes 12 tables instead of 10,000);
#   - src/appliance.rs: replaced tables and neighbour snapshots kept until no worker
#     holds them, then freed on the control thread (`Retired`, the gate), and the
#     neighbour merges that forget entries to make room (`NeighbourBook`).
# A few minutes on a 2-core VM, which is why scripts/test.sh does not run it. (The gate's
# timing test is left out: Miri is slow enough for its 200 ms limit to pass mid-test.)
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
cargo +nightly miri test -p kubypass-control --lib -- publish:: "$@"
cargo +nightly miri test -p kubypass --lib -- "$@" \
    appliance::tests::the_gate_frees_replaced_tables_once_workers_let_go \
    appliance::tests::the_retired_list_is_bounded_and_lets_the_oldest_go \
    appliance::tests::learned_neighbours_are_merged_and_published_once \
    appliance::tests::a_full_neighbour_table_forgets_the_oldest_entry_nothing_needs \
    appliance::tests::a_table_full_of_needed_neighbours_ignores_new_ones \
    appliance::tests::a_full_table_makes_room_at_most_once_per_interval
