#!/usr/bin/env bash
# scripts/lab/testpmd_smoke.sh — proves the lab's DPDK attachment without kubypass:
# dpdk-testpmd in kbp-appl with the same vdevs kubypass uses (net_af_packet0,iface=cl1 =
# port 0; net_af_packet1,iface=be1 = port 1) io-forwards between the ports; the client's
# ARP requests for 198.18.1.1 must come out on be0 in kbp-backend. Root; needs dpdk-testpmd.
# Brings the lab up (appliance mode) and always takes it down again.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB="$HERE/../lab.sh"
LOG=$(mktemp /tmp/kbp-testpmd.XXXXXX)
# shellcheck disable=SC2329 # called by the trap
cleanup() { "$LAB" down 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT
"$LAB" up
rx_be0() { ip -n kbp-backend -s link show be0 | awk '/RX:/ { getline; print $2 }'; }
before=$(rx_be0)
# testpmd exits when its standard input closes: hold it open with a sleep, inside the
# namespace so that `lab.sh down` (the trap) ends both with everything else there.
ip netns exec kbp-appl bash -c 'sleep 60 | exec dpdk-testpmd --no-huge -m 512 --no-pci \
    --file-prefix kbp-lab-smoke -l 0-1 \
    --vdev=net_af_packet0,iface=cl1 --vdev=net_af_packet1,iface=be1 \
    -- --forward-mode=io --auto-start --total-num-mbufs=2048' >"$LOG" 2>&1 </dev/null &
for _ in $(seq 120); do
    # A connect() makes the client kernel ARP for 198.18.1.1 on cl0.
    ip netns exec kbp-client timeout 1 bash -c 'exec 3<>/dev/tcp/198.18.1.1/80' 2>/dev/null || true
    after=$(rx_be0)
    if [ "$after" -gt "$before" ]; then
        echo "testpmd smoke: OK, $((after - before)) frames crossed cl1 -> port 0 -> port 1 -> be0"
        exit 0
    fi
done
echo "testpmd smoke: FAILED, nothing reached be0; testpmd log:" >&2
cat "$LOG" >&2
exit 1
