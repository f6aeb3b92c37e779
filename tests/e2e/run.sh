#!/usr/bin/env bash
# tests/e2e/run.sh — the kubypass end-to-end suite in the namespace lab (root only).
#
#   KUBYPASS_CMD='kubypass run --config ...' tests/e2e/run.sh [--manifests DIR] [-k NAME]...
#   tests/e2e/run.sh --kernel [--manifests DIR] [-k NAME]...   # kernel nftables baseline
#
# Copies the manifest directory (default deploy/examples/manifests) to a fresh work dir,
# brings the lab up (scripts/lab.sh), starts the appliance with
#   ip netns exec kbp-appl bash -c "$KUBYPASS_CMD"
# with KBP_MANIFESTS (the copy the tests edit: the appliance must watch it) and KBP_WORK
# exported, then runs tests/e2e/e2e.py in the client namespace. With --kernel no appliance
# is started: lab.sh's kernel_proxy.py watches the copy instead.
# Everything is torn down on exit, failure or Ctrl-C (trap); logs are printed on failure.
#
# Environment: KUBYPASS_CMD (required without --kernel), KBP_ADMIN_URL / KBP_ADMIN_NETNS /
# KBP_DROP_METRIC_RE (see e2e.py), KBP_READY_TIMEOUT (s, default 60),
# KBP_E2E_TIMEOUT (s for the whole check run, default 270), KBP_PYTHON (default
# /usr/bin/python3, which needs python3-yaml and python3-scapy: installed with apt-get
# when missing).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB="$ROOT/scripts/lab.sh"
PY=${KBP_PYTHON:-/usr/bin/python3}
mode=appliance
manifests="$ROOT/deploy/examples/manifests"
filters=()

while [ $# -gt 0 ]; do
    case $1 in
    --kernel) mode=kernel ;;
    --manifests) manifests=$2; shift ;;
    -k) filters+=(-k "$2"); shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "e2e: must run as root (network namespaces)" >&2
    exit 1
fi
if [ $mode = appliance ] && [ -z "${KUBYPASS_CMD:-}" ]; then
    echo "e2e: set KUBYPASS_CMD to the appliance command line, or pass --kernel" >&2
    exit 2
fi
if ! "$PY" -c 'import yaml, scapy.all' 2>/dev/null; then
    echo "e2e: installing python3-yaml python3-scapy for $PY" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml python3-scapy >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml python3-scapy >/dev/null; }
fi

WORK=$(mktemp -d /tmp/kbp-e2e.XXXXXX)
APID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$APID" ]; then
        kill -- "-$APID" 2>/dev/null || kill "$APID" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ]; then
        for f in "$WORK/appliance.log" /tmp/kbp-lab/kernel-proxy.log /tmp/kbp-lab/servers.log; do
            [ -s "$f" ] && { echo "---- last lines of $f"; tail -n 40 "$f"; }
        done
    fi
    "$LAB" down 2>/dev/null || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/manifests"
cp -r "$manifests"/. "$WORK/manifests/"

if [ $mode = kernel ]; then
    "$LAB" up --kernel --manifests "$WORK/manifests"
else
    "$LAB" up
    export KBP_MANIFESTS="$WORK/manifests" KBP_WORK="$WORK"
    setsid ip netns exec kbp-appl bash -c "$KUBYPASS_CMD" >"$WORK/appliance.log" 2>&1 </dev/null &
    APID=$!
    echo "e2e: appliance pid $APID: $KUBYPASS_CMD (log $WORK/appliance.log)"
fi

args=(--mode "$mode" --manifests "$WORK/manifests" --ready-timeout "${KBP_READY_TIMEOUT:-60}")
[ -n "$APID" ] && args+=(--appliance-pid "$APID")
timeout --signal=TERM "${KBP_E2E_TIMEOUT:-270}" \
    ip netns exec kbp-client "$PY" "$HERE/e2e.py" "${args[@]}" "${filters[@]}"
