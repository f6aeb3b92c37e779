#!/usr/bin/env bash
# Prepares a Debian 12 host (as root) to build, test, demo and bench kubypass.
# Idempotent: installs only missing Debian packages; quick when all is in place.
#   sudo scripts/setup-host.sh                 # packages only
#   sudo scripts/setup-host.sh --hugepages 1024  # also reserve N 2 MiB hugepages + mount hugetlbfs
set -euo pipefail

hugepages=""
while [ $# -gt 0 ]; do
    case "$1" in
        --hugepages) hugepages="${2:?--hugepages needs a count}"; shift 2 ;;
        --hugepages=*) hugepages="${1#*=}"; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "setup-host.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: run as root (sudo scripts/setup-host.sh)" >&2
    exit 1
fi

# Build: DPDK headers + pkg-config + libclang (bindgen) + a C compiler (wrappers).
# Run/test: DPDK runtime and PMD plugins, libpcap (net_pcap). Bench: dpdk-testpmd (dpdk-dev).
# Demo/lab/e2e: iproute2, ethtool, tcpdump, curl, nftables (the kernel baseline), and the
# e2e suite's Python modules (YAML manifests, scapy for malformed frames).
packages=(libdpdk-dev dpdk dpdk-dev clang libclang-dev pkg-config libpcap-dev build-essential
          iproute2 ethtool tcpdump ca-certificates curl nftables python3 python3-yaml python3-scapy)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "setup-host.sh: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
    else
        echo "setup-host.sh: no Rust toolchain; installing Debian's cargo (kubypass needs rustc >= 1.80; use rustup if Debian's is older)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cargo rustc
    fi
fi

if [ -n "$hugepages" ]; then
    echo "$hugepages" > /proc/sys/vm/nr_hugepages
    if ! grep -q " hugetlbfs " /proc/mounts; then
        mkdir -p /dev/hugepages
        mount -t hugetlbfs nodev /dev/hugepages
    fi
    echo "setup-host.sh: hugepages: $(grep -E 'HugePages_(Total|Free)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
fi
echo "setup-host.sh: ready (DPDK $(pkg-config --modversion libdpdk))"
