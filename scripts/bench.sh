#!/usr/bin/env bash
# io-forward throughput: kubypass (1 worker) vs dpdk-testpmd --forward-mode=io on the
# same net_null and net_ring vdevs and lcores, alternating rounds; prints both in Mpps
# and the ratio (benches/io_forward.rs does the measuring).
#   sudo scripts/bench.sh [--seconds N] [--rounds N] [--vdev null|ring]
# Uses hugepages when >= 512 are free (scripts/setup-host.sh --hugepages 1024), else --no-huge.
# KUBYPASS_BENCH_BIN=/path/to/kubypass measures another build (e.g. a saved baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
exec cargo bench -p kubypass --bench io_forward -- "$@"
