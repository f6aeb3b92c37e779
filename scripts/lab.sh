#!/usr/bin/env bash
# scripts/lab.sh — the kubypass namespace lab: real kernel clients and servers on one machine.
#
#   lab.sh up [--kernel] [--manifests DIR]   build the lab (idempotent: tears down first)
#   lab.sh down                              remove everything `up` made; safe after a crash
#   lab.sh status                            show namespaces, addresses, servers, rules
#
# Topology (addresses only from 198.18.0.0/15; no namespace has a route off the machine):
#
#   kbp-client                    kbp-appl (the appliance)               kbp-backend
#   cl0 02:00:c6:12:01:02  <->  cl1 02:00:c6:12:01:01 | be1 02:00:c6:12:02:01  <->  be0 02:00:c6:12:02:02
#   198.18.1.2/24, 198.18.1.3     (no IP: DPDK net_af_packet      198.18.2.2/24, servers on
#   198.18.0.0/15 via .1.1         port 0 = cl1, port 1 = be1)    198.18.2.11-.14; 0.0/15 via .2.1
#
#   The appliance owns 198.18.1.1 (client side, also the NodePort node address) and
#   198.18.2.1 (backend side) and answers ARP for them itself. Run it as
#     ip netns exec kbp-appl kubypass run ... with EAL vdevs
#     --vdev=net_af_packet0,iface=cl1 --vdev=net_af_packet1,iface=be1
#   Servers (scripts/lab/servers.py) on 198.18.2.11..14 = backend-1..4: HTTP 8080 ("backend-N"),
#   HTTP 8081 ("backend-N:8081", the Pods' named port http-alt), UDP echo 9000 ("backend-N: ...").
#   backend-4 (198.18.2.14) is in no demo manifest: tests add it to show a new backend.
#
#   --kernel: cl1/be1 get 198.18.1.1/24 and 198.18.2.1/24, the kernel forwards, and
#   scripts/lab/kernel_proxy.py --watch turns the manifests (default deploy/examples/manifests)
#   into nftables DNAT, like kube-proxy. This validates the e2e suite without kubypass.
#
# Offloads: veth leaves TX checksums unfinished (CHECKSUM_PARTIAL), which af_packet hands up
# as-is, and with TSO/GSO it hands up 64 KiB super-frames; so on cl0/be0 tx checksum, TSO,
# GSO and (on all four ends) GRO/LRO are off. The cl0/be0 kernels verify the checksums of
# frames the appliance writes through af_packet (checked on Linux 6.18: a bad TCP checksum
# is dropped and counted in TcpInCsumErrors, which the e2e suite watches); RX checksum
# offload is off on cl0/be0 too, so no kernel may trust a frame unverified.
# IPv6 is disabled in all three namespaces (no DAD, RS or MLD frames to confuse the appliance).
# Server and proxy logs go to $KBP_LAB_DIR (default /tmp/kbp-lab), removed by `down`.
set -euo pipefail

NS_CLIENT=kbp-client
NS_APPL=kbp-appl
NS_BACKEND=kbp-backend
ALL_NS=("$NS_CLIENT" "$NS_BACKEND" "$NS_APPL")
LAB_DIR=${KBP_LAB_DIR:-/tmp/kbp-lab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=${KBP_PYTHON:-/usr/bin/python3}

BACKENDS=(backend-1=198.18.2.11 backend-2=198.18.2.12 backend-3=198.18.2.13 backend-4=198.18.2.14)

log() { printf 'lab: %s\n' "$*" >&2; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root"
        exit 1
    fi
}

quiet_ns() { # $1 ns: no IPv6, no reverse-path filter surprises
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 >/dev/null
}

offloads() { # $1 ns, $2 ifname, rest: ethtool -K features
    local ns=$1 ifn=$2; shift 2
    # Features a veth does not have are refused one by one; set each on its own.
    while [ $# -ge 2 ]; do
        nsx "$ns" ethtool -K "$ifn" "$1" "$2" >/dev/null 2>&1 || true
        shift 2
    done
}

down() {
    need_root
    local ns pids
    for ns in "${ALL_NS[@]}"; do
        [ -e "/var/run/netns/$ns" ] || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086 # one pid per word
            kill $pids 2>/dev/null || true
        fi
    done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=""
        for ns in "${ALL_NS[@]}"; do
            [ -e "/var/run/netns/$ns" ] && pids+=$(ip netns pids "$ns" 2>/dev/null || true)
        done
        [ -z "$pids" ] && break
        sleep 0.2
    done
    for ns in "${ALL_NS[@]}"; do
        if [ -e "/var/run/netns/$ns" ]; then
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    rm -rf "$LAB_DIR"
    log "down"
}

up() {
    need_root
    local kernel=0 manifests="$ROOT/deploy/examples/manifests"
    while [ $# -gt 0 ]; do
        case $1 in
        --kernel) kernel=1 ;;
        --manifests) manifests=$(cd "$2" && pwd); shift ;;
        --workers) shift ;; # accepted for symmetry with the appliance; the lab is the same
        *) log "unknown option $1"; exit 2 ;;
        esac
        shift
    done
    down 2>/dev/null
    mkdir -p "$LAB_DIR"

    local ns
    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns"
        nsx "$ns" ip link set lo up
        quiet_ns "$ns"
    done
    ip link add cl0 netns "$NS_CLIENT" address 02:00:c6:12:01:02 type veth \
        peer name cl1 netns "$NS_APPL" address 02:00:c6:12:01:01
    ip link add be0 netns "$NS_BACKEND" address 02:00:c6:12:02:02 type veth \
        peer name be1 netns "$NS_APPL" address 02:00:c6:12:02:01

    offloads "$NS_CLIENT" cl0 tx off rx off tso off gso off gro off lro off
    offloads "$NS_BACKEND" be0 tx off rx off tso off gso off gro off lro off
    offloads "$NS_APPL" cl1 gro off lro off tso off gso off
    offloads "$NS_APPL" be1 gro off lro off tso off gso off

    nsx "$NS_CLIENT" ip addr add 198.18.1.2/24 dev cl0
    nsx "$NS_CLIENT" ip addr add 198.18.1.3/24 dev cl0
    nsx "$NS_CLIENT" ip link set cl0 up
    nsx "$NS_CLIENT" ip route add 198.18.0.0/15 via 198.18.1.1 dev cl0 src 198.18.1.2

    nsx "$NS_BACKEND" ip addr add 198.18.2.2/24 dev be0
    local b
    for b in "${BACKENDS[@]}"; do
        nsx "$NS_BACKEND" ip addr add "${b#*=}/24" dev be0
    done
    nsx "$NS_BACKEND" ip link set be0 up
    nsx "$NS_BACKEND" ip route add 198.18.0.0/15 via 198.18.2.1 dev be0 src 198.18.2.2

    nsx "$NS_APPL" ip link set cl1 up
    nsx "$NS_APPL" ip link set be1 up
    if [ $kernel -eq 1 ]; then
        nsx "$NS_APPL" ip addr add 198.18.1.1/24 dev cl1
        nsx "$NS_APPL" ip addr add 198.18.2.1/24 dev be1
        nsx "$NS_APPL" sysctl -qw net.ipv4.ip_forward=1
        # Service addresses are local here (as kube-proxy's nodes route them somewhere):
        # DNAT in prerouting sends served ones on; the rest reach reject_input.
        nsx "$NS_APPL" ip route add local 198.18.100.0/23 dev lo
    else
        # The kernel here must stay silent: the appliance reads and writes cl1/be1 raw.
        nsx "$NS_APPL" sysctl -qw net.ipv4.ip_forward=0
    fi

    # Servers, in the backend namespace (killed by `down` through `ip netns pids`).
    rm -f "$LAB_DIR/servers.ready"
    nsx "$NS_BACKEND" setsid "$PY" "$HERE/lab/servers.py" --ready "$LAB_DIR/servers.ready" \
        "${BACKENDS[@]}" >"$LAB_DIR/servers.log" 2>&1 </dev/null &

    for _ in $(seq 50); do
        [ -e "$LAB_DIR/servers.ready" ] && break
        sleep 0.1
    done
    if [ ! -e "$LAB_DIR/servers.ready" ]; then
        log "servers did not start:"; cat "$LAB_DIR/servers.log" >&2; exit 1
    fi

    if [ $kernel -eq 1 ]; then
        nsx "$NS_APPL" setsid "$PY" "$HERE/lab/kernel_proxy.py" --watch --node-ip 198.18.1.1 \
            "$manifests" >"$LAB_DIR/kernel-proxy.log" 2>&1 </dev/null &
        for _ in $(seq 50); do
            nsx "$NS_APPL" nft list table ip kbp_lab >/dev/null 2>&1 && break
            sleep 0.1
        done
        nsx "$NS_APPL" nft list table ip kbp_lab >/dev/null 2>&1 ||
            { log "kernel proxy failed:"; cat "$LAB_DIR/kernel-proxy.log" >&2; exit 1; }
        echo kernel >"$LAB_DIR/mode"
        log "up (kernel mode: nftables DNAT from $manifests)"
    else
        echo appliance >"$LAB_DIR/mode"
        log "up (appliance mode: run kubypass in $NS_APPL on cl1=port0, be1=port1)"
    fi
}

status() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        if [ ! -e "/var/run/netns/$ns" ]; then
            echo "$ns: absent"
            continue
        fi
        echo "== $ns (pids: $(ip netns pids "$ns" | tr '\n' ' '))"
        nsx "$ns" ip -br addr
        nsx "$ns" ip route
    done
    [ -e "$LAB_DIR/mode" ] && echo "mode: $(cat "$LAB_DIR/mode")"
    if [ -e "/var/run/netns/$NS_APPL" ]; then
        nsx "$NS_APPL" nft list table ip kbp_lab 2>/dev/null || true
    fi
}

case ${1:-} in
up) shift; up "$@" ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up [--kernel] [--manifests DIR] | down | status" >&2; exit 2 ;;
esac
