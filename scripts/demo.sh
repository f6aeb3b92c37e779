#!/usr/bin/env bash
# The kubypass demo: real clients reach Kubernetes Services through the appliance.
#
#   sudo scripts/demo.sh
#
# On a fresh Debian 12 machine, as root: installs what is missing (scripts/setup-host.sh),
# builds kubypass, brings up the namespace lab (scripts/lab.sh: a client namespace, three
# backend servers, the appliance on two veth ports through DPDK's net_af_packet), runs
# kubypass with the Services of deploy/examples/manifests/, sends requests with curl from
# the client namespace, shows which backend answered each, and prints the appliance's
# counters. Everything it made is removed on exit, failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (sudo scripts/demo.sh): it creates network namespaces" >&2
    exit 1
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "setting up the host and building kubypass (first run: a few minutes)"
bash scripts/setup-host.sh >/dev/null
cargo build --release -q -p kubypass
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/kubypass"

log=$(mktemp /tmp/kubypass-demo.XXXXXX.log)
cleanup() {
    trap - EXIT INT TERM
    ip netns pids kbp-appl 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.5
    bash "$root/scripts/lab.sh" down >/dev/null 2>&1 || true
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "lab: client 198.18.1.2 | appliance 198.18.1.1 / 198.18.2.1 | backends 198.18.2.11-13"
bash scripts/lab.sh down >/dev/null 2>&1 || true
bash scripts/lab.sh up >/dev/null

say "starting kubypass (deploy/examples/lab.yaml, Services from deploy/examples/manifests/)"
# As the systemd unit does: the worker tables on transparent huge pages.
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 ip netns exec kbp-appl "$bin" run --config deploy/examples/lab.yaml >"$log" 2>&1 &
for _ in $(seq 1 100); do
    if ip netns exec kbp-client curl -s -m 1 -o /dev/null http://198.18.100.10/ 2>/dev/null; then
        break
    fi
    if ! ip netns pids kbp-appl | grep -q .; then
        echo "kubypass exited:"; cat "$log"; exit 1
    fi
    sleep 0.2
done
grep '^kubypass:' "$log" | sed 's/^/  /'

client() { ip netns exec kbp-client "$@"; }
ask() { # ask LABEL URL N [curl options]: N requests, one line with who answered
    local label=$1 url=$2 n=$3; shift 3
    local answers
    answers=$(for _ in $(seq 1 "$n"); do client curl -s -m 2 "$@" "$url" || echo "(no answer)"; echo; done |
        grep . | sort | uniq -c | awk '{printf "%s x%s  ", $2, $1}')
    printf '  %-44s %s\n' "$label" "$answers"
}

say "requests from the client namespace (curl), and the backend that answered"
ask "ClusterIP     198.18.100.10:80" http://198.18.100.10/ 12
ask "NodePort      198.18.1.1:30080" http://198.18.1.1:30080/ 12
ask "LoadBalancer  198.18.101.10:80" http://198.18.101.10/ 12
ask "ClientIP affinity 198.18.100.13:80" http://198.18.100.13/ 12
ask "named targetPort 198.18.100.14:80 -> :8081" http://198.18.100.14/ 6
printf '  %-44s ' "UDP echo      198.18.100.20:9000"
client python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"hello", ("198.18.100.20", 9000)); print(s.recv(100).decode())'
printf '  %-44s ' "no endpoints  198.18.100.30:80"
if client curl -s -m 2 -o /dev/null http://198.18.100.30/; then
    echo "answered?!"
else
    rc=$?; [ $rc -eq 7 ] && echo "connection refused at once (TCP RST from kubypass)" || echo "curl exit $rc"
fi

say "appliance counters (GET http://127.0.0.1:10256/metrics inside the appliance namespace)"
ip netns exec kbp-appl curl -s http://127.0.0.1:10256/metrics |
    grep -E '^kubypass_(rx_frames|tx_frames|dnat_frames|reverse_nat_frames|fast_path_frames|new_flows|replies|conntrack_entries|neighbours|table_generation)[_{ ]|^kubypass_pipeline_drops_total.* [1-9]' |
    sed 's/^/  /'
say "status (GET /status): $(ip netns exec kbp-appl curl -s http://127.0.0.1:10256/status |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(s["proxied"] for s in d["services"]), "Services proxied, generation", d["generation"])')"
echo
echo "done: stopping kubypass and removing the lab"
