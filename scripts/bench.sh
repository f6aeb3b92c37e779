#!/usr/bin/env bash
# io-forward throughput: kubypass (1 worker, paired forwarder) vs dpdk-testpmd
# --forward-mode=io, on the same two net_ring vdevs and the same lcores, in one run.
# Prints both in Mpps and their ratio.
#   sudo scripts/bench.sh [SECONDS]      (default 10; hugepages used if >= 512 free,
#                                         reserve with scripts/setup-host.sh --hugepages 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"

bash scripts/setup-host.sh >/dev/null
cargo build --release -p kubypass 2>&1 | tail -1
bin="${CARGO_TARGET_DIR:-target}/release/kubypass"
pmd_dir=$(ls -d "$(pkg-config --variable=libdir libdpdk)"/dpdk/pmds-* | tail -1)

mem=(--no-huge -m 512)
kb_mem=(--no-huge --memory-mb 512)
mode="no hugepages"
if [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 512 ]; then
    mem=(-m 512); kb_mem=(--memory-mb 512); mode="hugepages"
fi
lcores="0-1"   # main lcore 0, one forwarding lcore 1, for both programs

cfg=$(mktemp --suffix=.yaml)
trap 'rm -f "$cfg"' EXIT
cat > "$cfg" <<YAML
eal: {lcores: "$lcores", in_memory: false}
ports: [{name: a, device: net_ring0}, {name: b, device: net_ring1}]
queues: {rx_size: 1024, tx_size: 1024}
mempool: {size: 16383, cache: 256}
YAML

# Average of the per-second rates after the first (warm-up) second.
avg() { awk 'NR>1 {s+=$1; n++} END {if (n) printf "%.3f", s/n; else print "0"}'; }

echo "== kubypass io-forward ($mode, lcores $lcores, ${secs}s)"
kb=$("$bin" run --config "$cfg" "${kb_mem[@]}" --tx-first 32 --stats-interval 1 --duration "$secs" 2>/dev/null \
    | grep '^stats .* total ' | sed -n 's/.*rx_mpps=\([0-9.]*\).*/\1/p' | avg)
echo "kubypass: $kb Mpps"

echo "== dpdk-testpmd --forward-mode=io (same vdevs, lcores, ${secs}s)"
tp=$(timeout -s INT $((secs + 3)) dpdk-testpmd -l "$lcores" "${mem[@]}" --no-pci --no-telemetry \
        --file-prefix kubypass-bench-testpmd -d "$pmd_dir" --vdev net_ring0 --vdev net_ring1 -- \
        --forward-mode=io --tx-first --nb-cores=1 --burst=32 --rxd=1024 --txd=1024 \
        --total-num-mbufs=16383 --stats-period 1 2>/dev/null </dev/null \
    | awk '/Rx-pps:/ {s+=$2; n++; if (n % 2 == 0) {print s/1e6; s=0}}' | head -n "$secs" | avg) || true
echo "testpmd:  $tp Mpps"
awk -v a="$kb" -v b="$tp" 'BEGIN { if (b > 0) printf "ratio kubypass/testpmd: %.3f\n", a/b; else print "ratio: testpmd gave no figure" }'
