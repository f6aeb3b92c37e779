#!/usr/bin/env bash
# scripts/bench-dataplane.sh — runs the dataplane's criterion benches (dataplane/benches:
# `micro` and `pipeline`) and prints what a packet costs, in ns, per case.
#
#   bench-dataplane.sh                 both benches, 1 s warm-up + 3 s measurement each
#   bench-dataplane.sh --quick         0.5 s + 1 s (a smoke run; figures are rough)
#   bench-dataplane.sh --only pipeline one bench binary (micro | pipeline)
#   bench-dataplane.sh --summary       only print the table of the last run's results
#   bench-dataplane.sh -- ARGS...      extra criterion arguments (a filter, --sample-size)
#
# Environment: CARGO_TARGET_DIR (results are read from $CARGO_TARGET_DIR/criterion),
# KUBYPASS_BENCH_CONFIGS (pipeline configurations to set up, e.g. `1svc_1kflows`).
# The benches run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as the appliance does
# (deploy/systemd/kubypass.service): large tables on transparent huge pages.
#
# A full run takes ~6-8 minutes on a 2-core VM, most of it setting up 1M tracked flows.
# Run it when the machine is otherwise idle: `uptime` is printed before and after, and
# figures taken under load are inflated by whatever else runs.
#
# The table. Per-packet rows divide the time of one iteration by the frames it processes
# (its criterion throughput: a burst of 32, or two for `_republished`): the median over
# criterion's samples, and the best sample (least disturbed by other work). "net"
# subtracts the copy baseline the row's burst includes (`copy/burst` for frames of
# established flows and for parsing, `copy/burst_fresh_tuple` for new flows).
# `cold_pages` (micro) measures what a cold line and a cold page cost on this machine,
# prefetched: the baseline the 10,000-Service rows are read against (see its doc).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
warm=1
measure=3
benches=(micro pipeline)
summary_only=0
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) warm=0.5 measure=1 ;;
        --only)
            shift
            benches=("${1:?--only needs micro or pipeline}")
            ;;
        --summary) summary_only=1 ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ $summary_only -eq 0 ]]; then
    echo "load before: $(uptime)"
    bench_args=()
    for b in "${benches[@]}"; do bench_args+=(--bench "$b"); done
    cmd=(cargo bench -p kubypass-dataplane "${bench_args[@]}" --
        --warm-up-time "$warm" --measurement-time "$measure" "${extra[@]}")
    echo "+ ${cmd[*]}"
    (cd "$root" && CARGO_TARGET_DIR="$target" \
        GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}" "${cmd[@]}")
    echo "load after: $(uptime)"
fi

python3 - "$target/criterion" <<'EOF'
import json, os, re, sys

base = sys.argv[1]
BURST = 32

def load(group, name):
    """(median, best) ns per iteration, scaled to one burst of BURST frames when the
    bench declares how many frames an iteration processes."""
    d = os.path.join(base, group, name, "new")
    try:
        with open(os.path.join(d, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(d, "sample.json")) as f:
            s = json.load(f)
    except FileNotFoundError:
        return None
    scale = 1.0
    try:
        with open(os.path.join(d, "benchmark.json")) as f:
            frames = (json.load(f).get("throughput") or {}).get("Elements")
        if group not in ("maglev_build", "cold_pages") and frames:
            scale = BURST / frames
    except (FileNotFoundError, ValueError):
        pass
    best = min(t / i for t, i in zip(s["times"], s["iters"]))
    return est["median"]["point_estimate"] * scale, best * scale

def names(group):
    d = os.path.join(base, group)
    if not os.path.isdir(d):
        return []
    def key(n):
        # Fewer Services first, then fewer flows, then variants (1k before 1M).
        m = re.search(r"(\d+)(svc|_services)", n)
        f = re.search(r"(\d+)([kM])(flows|_flows)", n)
        flows = int(f.group(1)) * (1000 if f.group(2) == "k" else 10**6) if f else 0
        return (int(m.group(1)) if m else 0, flows, n)
    return sorted((n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n, "new"))), key=key)

copy = load("copy", "burst")
copy_fresh = load("copy", "burst_fresh_tuple")
rows = []
def per_packet(group, baseline=None):
    for n in names(group):
        r = load(group, n)
        if r is None:
            continue
        med, best = r[0] / BURST, r[1] / BURST
        net = med - baseline[0] / BURST if baseline else None
        rows.append((f"{group}/{n}", med, best, net))

per_packet("copy")
per_packet("parse", copy)
per_packet("established_dnat", copy)
per_packet("reverse_nat", copy)
per_packet("dnat_floor", copy)
per_packet("new_flow", copy_fresh)
per_packet("prefetch_only", copy)
per_packet("conntrack_lookup")
per_packet("frontend_lookup")
per_packet("maglev_lookup")

if not rows:
    print(f"no criterion results under {base}")
    sys.exit(0)
w = max(len(r[0]) for r in rows)
print()
print(f"{'case (ns per packet)':<{w}}  {'median':>8}  {'best':>8}  {'net':>8}")
for name, med, best, net in rows:
    n = f"{net:8.1f}" if net is not None else f"{'':>8}"
    print(f"{name:<{w}}  {med:8.1f}  {best:8.1f}  {n}")

for n in names("maglev_build"):
    r = load("maglev_build", n)
    # Ids end in SERVICESxBACKENDS (e.g. tables_1000x250).
    m = re.search(r"(\d+)x\d+$", n)
    if r and m:
        services = int(m.group(1))
        print(f"maglev_build/{n}: {r[0] / 1e6:.1f} ms per {services:,} Services "
              f"({r[0] / services / 1e3:.2f} µs per Service; best {r[1] / 1e6:.1f} ms)")

pages = {n: load("cold_pages", n) for n in ("none", "1_page", "8_pages")}
page_ns = None
if all(pages.values()):
    none, one, eight = (pages[n][0] for n in ("none", "1_page", "8_pages"))
    page_ns = (eight - one) / 7
    print(f"cold_pages (ns per step of ~0.4 µs arithmetic, median): none {none:.1f}, 8 lines in 1 page "
          f"{one:.1f}, in 8 pages {eight:.1f}: a cold line ~{(one - none) / 8:.1f} ns, "
          f"one more cold page ~{page_ns:.1f} ns")

def med(group, name):
    r = load(group, name)
    return r[0] / BURST if r else None

print()
print("targets (issue 3), median, gross / net of the copy:")
c = copy[0] / BURST if copy else 0.0
for flows, limit in (("1k", 30.0), ("1M", 60.0)):
    m = med("established_dnat", f"1svc_{flows}flows")
    if m is not None:
        ok = "met" if m - c <= limit else "NOT met"
        print(f"  established DNAT, {flows} flows: {m:.1f} / {m - c:.1f} ns (target <= {limit:.0f}): {ok}")
for group in ("established_dnat", "reverse_nat", "new_flow"):
    for flows in ("1k", "1M"):
        one, many = med(group, f"1svc_{flows}flows"), med(group, f"10000svc_{flows}flows")
        if one and many:
            d = (many / one - 1) * 100
            ok = "met" if d <= 10 else "NOT met"
            gap = f"{many - one:+.1f} ns"
            if page_ns and page_ns > 0:
                gap += f", the cost of ~{(many - one) / page_ns:.1f} cold pages"
            print(f"  {group} {flows} flows, 10,000 vs 1 Service: {d:+.1f}% ({gap}) "
                  f"(target within 10%): {ok}")
EOF
