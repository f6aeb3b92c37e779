#!/usr/bin/env bash
# scripts/lab/kernel_appliance.sh — a stand-in for `kubypass run` in the lab's appliance
# namespace, built from the kernel: it exercises tests/e2e/run.sh's appliance path
# (KUBYPASS_CMD, KBP_MANIFESTS, readiness, the admin URL) before kubypass exists.
#
#   KUBYPASS_CMD=scripts/lab/kernel_appliance.sh KBP_ADMIN_URL=http://127.0.0.1:9099 \
#   KBP_MIN_DROPS=1 tests/e2e/run.sh
#
# Run inside kbp-appl after `lab.sh up` (appliance mode): gives cl1/be1 the appliance's
# addresses, turns forwarding on and runs kernel_proxy.py --watch on $KBP_MANIFESTS with
# /metrics on 127.0.0.1:9099. Everything it makes lives in the namespace (lab.sh down).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ns=$(ip netns identify $$)
if [ "$ns" != kbp-appl ]; then
    echo "kernel_appliance.sh: run me in kbp-appl (ip netns exec kbp-appl ...), not '$ns'" >&2
    exit 1
fi
ip addr replace 198.18.1.1/24 dev cl1
ip addr replace 198.18.2.1/24 dev be1
ip route replace local 198.18.100.0/23 dev lo
sysctl -qw net.ipv4.ip_forward=1
exec "${KBP_PYTHON:-/usr/bin/python3}" "$HERE/kernel_proxy.py" --watch --node-ip 198.18.1.1 \
    --metrics 127.0.0.1:9099 "${KBP_MANIFESTS:?KBP_MANIFESTS must name the manifest dir}"
