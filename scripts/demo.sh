#!/usr/bin/env bash
# kubypass demo (interim): sets the host up, builds the appliance, and runs its
# forwarder on two DPDK net_ring virtual ports with generated traffic, printing the
# per-worker counters every second. Stops after DEMO_SECONDS (default 10) or Ctrl-C.
#   sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh
cargo build --release -p kubypass
bin="${CARGO_TARGET_DIR:-target}/release/kubypass"

huge_flag=(--no-huge --memory-mb 512)
if [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 256 ]; then
    huge_flag=()   # hugepages reserved: use them
fi

echo
echo "== kubypass: forwarding between net_ring0 and net_ring1 (config deploy/examples/kubypass.yaml)"
echo "   64 generated frames loop through the ports; the counters below are the workers'."
echo
exec "$bin" run --config deploy/examples/kubypass.yaml "${huge_flag[@]}" \
    --tx-first 32 --stats-interval 1 --duration "${DEMO_SECONDS:-10}"
