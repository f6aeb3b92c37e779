#!/usr/bin/env python3
"""kubypass end-to-end checks, run inside the lab's client namespace by tests/e2e/run.sh.

Real kernel TCP/UDP clients (198.18.1.2 and 198.18.1.3) talk to the demo Services of
deploy/examples/manifests through the appliance (kubypass, or the kernel nftables baseline
with --mode kernel) to the lab servers (scripts/lab/servers.py, which answer "backend-N").
Each check is bounded in time (socket timeouts and a per-check alarm). The last line is
"N passed, N failed" (", N skipped" when some did not apply); the exit status is 1 when a
check failed. Needs PyYAML and, for the bad-input check, scapy.

Environment (all optional):
  KBP_ADMIN_URL      appliance admin base URL (e.g. http://127.0.0.1:9090); when set, the
                     bad-input check also requires /metrics drop counters to rise
  KBP_ADMIN_NETNS    namespace the admin URL is reached from (default kbp-appl)
  KBP_DROP_METRIC_RE regex of metric names summed as drops (default "drop")
  KBP_MIN_DROPS      how much that sum must rise (default: the number of structurally
                     malformed frames sent, 120)
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import yaml

CLIENT = "198.18.1.2"
CLIENT2 = "198.18.1.3"
NODE = "198.18.1.1"
WEB = ("198.18.100.10", 80)
NODEPORT = (NODE, 30080)
LB = ("198.18.101.10", 80)
AFFINITY = ("198.18.100.13", 80)
NAMED = ("198.18.100.14", 80)
ECHO = ("198.18.100.20", 9000)
EMPTY = ("198.18.100.30", 80)
THREE = {"backend-1", "backend-2", "backend-3"}
ADDR = {
    "backend-1": "198.18.2.11",
    "backend-2": "198.18.2.12",
    "backend-3": "198.18.2.13",
    "backend-4": "198.18.2.14",
}
WEB_FILE = "10-web.yaml"


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# ---------------------------------------------------------------- clients


def _read_response(sock):
    """Reads one HTTP/1.1 response with Content-Length; returns the body as str."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise CheckFailed("connection closed before response headers (%r)" % buf[:80])
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    expect(m is not None and head.startswith(b"HTTP/1.1 200"), "bad response %r" % head[:80])
    want = int(m.group(1))
    while len(body) < want:
        chunk = sock.recv(4096)
        if not chunk:
            raise CheckFailed("connection closed mid-body")
        body += chunk
    return body[:want].decode()


def http_get(dst, src=CLIENT, timeout=2.0):
    """One request on a new TCP connection; returns the body without its newline."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(dst)
        s.sendall(b"GET / HTTP/1.1\r\nHost: kbp\r\nConnection: close\r\n\r\n")
        return _read_response(s).strip()


class KeepAlive:
    """A long-lived HTTP/1.1 connection: many requests on one TCP flow."""

    def __init__(self, dst, src=CLIENT, timeout=2.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((src, 0))
        self.sock.connect(dst)

    def get(self):
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: kbp\r\n\r\n")
        return _read_response(self.sock).strip()

    def close(self):
        self.sock.close()


def tally(dst, n, src=CLIENT):
    return Counter(http_get(dst, src) for _ in range(n))


def expect_spread(counts, n, names=THREE, lo=0.20, hi=0.47):
    expect(set(counts) == set(names), "backends seen %s, want %s" % (dict(counts), sorted(names)))
    for name in names:
        share = counts[name] / n
        expect(lo <= share <= hi, "%s got %.1f%% of %d (want %d%%-%d%%): %s"
               % (name, 100 * share, n, 100 * lo, 100 * hi, dict(counts)))
    return "%s" % dict(sorted(counts.items()))


def udp_exchange(dst, payload, src=CLIENT, timeout=1.0):
    """Sends one datagram from a fresh port; returns (reply, reply source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.sendto(payload, dst)
        return s.recvfrom(65535)


# ---------------------------------------------------------------- manifests


def write_atomically(path, docs):
    """Replaces a manifest file in one rename (a watcher never sees half a file)."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    os.rename(tmp, path)


def with_endpoints(docs, addresses):
    """Copy of a Service+EndpointSlice file whose slice holds exactly these ready addresses."""
    out = []
    for d in docs:
        d = yaml.safe_load(yaml.safe_dump(d))
        if d.get("kind") == "EndpointSlice":
            proto = d["endpoints"][0]
            eps = []
            for a in addresses:
                e = yaml.safe_load(yaml.safe_dump(proto))
                e["addresses"] = [a]
                e.setdefault("targetRef", {})["name"] = "web-lab-" + a.replace(".", "-")
                eps.append(e)
            d["endpoints"] = eps
        out.append(d)
    return out


# ---------------------------------------------------------------- checks

CHECKS = []


def check(name, timeout=60, kernel_differs=None):
    """Registers a check. kernel_differs: why the kernel baseline cannot pass it."""

    def reg(fn):
        CHECKS.append((name, fn, timeout, kernel_differs))
        return fn

    return reg


@check("clusterip_spread")
def _clusterip(ctx):
    return expect_spread(tally(WEB, 300), 300)


@check("nodeport_spread")
def _nodeport(ctx):
    return expect_spread(tally(NODEPORT, 300), 300)


@check("loadbalancer_spread")
def _lb(ctx):
    return expect_spread(tally(LB, 300), 300)


@check("every_frontend_answers")
def _frontends(ctx):
    # ClusterIPs of the NodePort/LoadBalancer Services, the LB's own NodePort, the 2nd client.
    for dst in (("198.18.100.11", 80), ("198.18.100.12", 80), (NODE, 30081)):
        for _ in range(3):
            body = http_get(dst)
            expect(body in THREE, "%s:%d answered %r" % (dst + (body,)))
    expect(http_get(WEB, src=CLIENT2) in THREE, "second client address not served")
    return "3 extra frontends and client 198.18.1.3 served"


@check("named_targetport")
def _named(ctx):
    counts = tally(NAMED, 90)
    names = {b + ":8081" for b in THREE}
    expect(set(counts) == names, "want bodies %s (port 8081), got %s" % (sorted(names), dict(counts)))
    return dict(sorted(counts.items()))


@check("udp_echo")
def _udp(ctx):
    seen = Counter()
    for i in range(90):
        src = CLIENT if i % 2 == 0 else CLIENT2
        payload = ("ping %d from %s" % (i, src)).encode()
        try:
            reply, peer = udp_exchange(ECHO, payload, src)
        except socket.timeout:
            raise CheckFailed("no echo for datagram %d from %s" % (i, src))
        expect(peer == ECHO, "reply came from %s:%d, not the Service %s:%d" % (peer + ECHO))
        name, sep, echoed = reply.partition(b": ")
        expect(sep and echoed == payload, "reply %r does not echo %r" % (reply, payload))
        seen[name.decode()] += 1
    expect(set(seen) == THREE, "UDP flows reached %s, want all of %s" % (dict(seen), sorted(THREE)))
    return dict(sorted(seen.items()))


@check("clientip_affinity")
def _affinity(ctx):
    got = {}
    for src in (CLIENT, CLIENT2):
        counts = tally(AFFINITY, 50, src)
        expect(len(counts) == 1, "client %s spread over %s" % (src, dict(counts)))
        got[src] = next(iter(counts))
    return got


@check("no_endpoints_refused")
def _empty(ctx):
    for _ in range(3):
        t0 = time.monotonic()
        try:
            http_get(EMPTY, timeout=3.0)
        except ConnectionRefusedError:
            took = time.monotonic() - t0
            expect(took < 0.5, "refused only after %.2fs" % took)
            continue
        except socket.timeout:
            raise CheckFailed("connect() timed out instead of ECONNREFUSED")
        except OSError as e:
            raise CheckFailed("connect() failed with %s, want ECONNREFUSED" % e)
        raise CheckFailed("a Service with no endpoints answered")
    return "ECONNREFUSED at once, 3 times"


@check("live_change", timeout=90)
def _live(ctx):
    path = os.path.join(ctx.manifests, WEB_FILE)
    with open(path) as f:
        original = list(yaml.safe_load_all(f))
    held, victim = None, None
    try:
        # A long-lived connection, and the backend it landed on.
        held = KeepAlive(WEB)
        victim = held.get()
        expect(victim in THREE, "long-lived connection answered %r" % victim)
        rest = sorted(THREE - {victim})

        # Remove its backend.
        write_atomically(path, with_endpoints(original, [ADDR[b] for b in rest]))
        t0 = time.monotonic()
        last_hit, n = None, 0
        while time.monotonic() - t0 < 1.0:
            if http_get(WEB) == victim:
                last_hit = time.monotonic() - t0
            n += 1
        after = tally(WEB, 60)
        expect(victim not in after, "%s still got new connections >1s after removal: %s"
               % (victim, dict(after)))
        expect(set(after) == set(rest), "after removal new connections went to %s" % dict(after))
        for _ in range(3):
            expect(held.get() == victim, "long-lived connection to %s broke (no drain)" % victim)
        removed = "last new flow to %s at %s" % (
            victim, "none" if last_hit is None else "%.0f ms" % (1000 * last_hit))

        # Add a new backend (backend-4) and bring the removed one back.
        write_atomically(path, with_endpoints(original, [ADDR[b] for b in sorted(THREE)] + [ADDR["backend-4"]]))
        t1 = time.monotonic()
        first_new = None
        while time.monotonic() - t1 < 1.0:
            if http_get(WEB) == "backend-4" and first_new is None:
                first_new = time.monotonic() - t1
        expect(first_new is not None, "added backend-4 got no new connection within 1 s")
        after = tally(WEB, 120)
        expect("backend-4" in after, "added backend-4 got no new connection >1s after: %s"
               % dict(after))
        expect(set(after) == THREE | {"backend-4"}, "after adding: %s" % dict(after))
        expect(held.get() == victim, "long-lived connection broke after the second change")
        return "%s (%d flows in the first 1s); backend-4 first hit at %s; kept conn served" % (
            removed, n, "n/a" if first_new is None else "%.0f ms" % (1000 * first_new))
    finally:
        if held:
            held.close()
        write_atomically(path, original)
        time.sleep(1.0)


CSUM_COUNTERS = (("Ip", "InHdrErrors"), ("Tcp", "InCsumErrors"), ("Udp", "InCsumErrors"))


def csum_errors():
    """Checksum/header error counters of the client and backend kernels."""
    out = {}
    for ns, text in (
        ("client", open("/proc/net/snmp").read()),
        ("backend", subprocess.run(["ip", "netns", "exec", "kbp-backend", "cat", "/proc/net/snmp"],
                                   capture_output=True, text=True).stdout),
    ):
        rows = [line.split() for line in text.splitlines()]
        for head, vals in zip(rows[::2], rows[1::2]):
            for name, val in zip(head[1:], vals[1:]):
                if (head[0].rstrip(":"), name) in CSUM_COUNTERS:
                    out["%s %s:%s" % (ns, head[0].rstrip(":"), name)] = int(val)
    return out


@check("no_checksum_errors")
def _csum(ctx):
    # Every frame the appliance wrote so far was well formed: the client and backend
    # kernels verify checksums (run before the bad-input check, which sends bad ones).
    now = csum_errors()
    grew = {k: v - ctx.csum_baseline.get(k, 0) for k, v in now.items()
            if v != ctx.csum_baseline.get(k, 0)}
    expect(not grew, "kernels counted bad frames from the appliance: %s" % grew)
    return "%d counters unchanged" % len(now)


# Malformed frames: (description, counts as a structural drop, builder(dst_mac, src_mac)).
def malformed_frames(dst_mac, src_mac):
    from scapy.all import IP, TCP, UDP, Ether, Raw  # noqa: imported late: slow

    eth = Ether(dst=dst_mac, src=src_mac)
    vip, port = WEB
    good = bytes(eth / IP(src=CLIENT, dst=vip) / TCP(sport=40000, dport=port, flags="S"))
    ip_off = 14
    frames = []

    def mutate(offset, value):
        b = bytearray(good)
        b[offset] = value
        return bytes(b)

    frames.append(("IPv4 header cut short", True, good[: ip_off + 10]))
    frames.append(("IPv4 runt: ethertype only", True, good[:ip_off] + b"\x45\x00"))
    frames.append(("IHL 3 (< 5)", True, mutate(ip_off, 0x43)))
    frames.append(("IHL 15 beyond the packet", True, mutate(ip_off, 0x4F)))
    frames.append(("version 6 in an IPv4 ethertype", True, mutate(ip_off, 0x65)))
    b = bytearray(good)
    b[ip_off + 2: ip_off + 4] = (1400).to_bytes(2, "big")
    frames.append(("total length beyond the frame", True, bytes(b)))
    frames.append(("TCP data offset 2 (< 5)", True, bytes(
        eth / IP(src=CLIENT, dst=vip) / TCP(sport=40001, dport=port, flags="S", dataofs=2))))
    frames.append(("TCP data offset 15 beyond the segment", True, bytes(
        eth / IP(src=CLIENT, dst=vip) / TCP(sport=40002, dport=port, flags="S", dataofs=15))))
    frames.append(("TCP header cut short", True, bytes(
        eth / IP(src=CLIENT, dst=vip, proto=6) / Raw(b"\x9c\x42\x00\x50\x00"))))
    frames.append(("UDP length beyond the packet", True, bytes(
        eth / IP(src=CLIENT, dst=ECHO[0]) / UDP(sport=40003, dport=ECHO[1], len=500) / Raw(b"x"))))
    frames.append(("garbage ethertype 0x88b5", True, bytes(
        Ether(dst=dst_mac, src=src_mac, type=0x88B5) / Raw(os.urandom(46)))))
    frames.append(("bad IPv4 header checksum", True, bytes(
        eth / IP(src=CLIENT, dst=vip, chksum=0x1234) / TCP(sport=40004, dport=port, flags="S"))))
    frames.append(("bad TCP checksum", False, bytes(
        eth / IP(src=CLIENT, dst=vip) / TCP(sport=40005, dport=port, flags="S", chksum=0x1234))))
    frames.append(("IPv4 non-first fragment", False, bytes(
        eth / IP(src=CLIENT, dst=vip, frag=100, proto=6) / Raw(os.urandom(32)))))
    frames.append(("ARP with a bad hardware length", False, bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=src_mac, type=0x0806)
        / Raw(b"\x00\x01\x08\x00\x09\x04\x00\x01" + os.urandom(20)))))
    return frames


def appliance_mac():
    """The MAC the client kernel resolved for 198.18.1.1 (after at least one flow)."""
    http_get(WEB)
    out = subprocess.run(["ip", "neigh", "show", NODE, "dev", "cl0"],
                         capture_output=True, text=True).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    expect(m is not None, "no neighbour entry for %s: %r" % (NODE, out))
    return m.group(1)


def drop_total():
    url = os.environ["KBP_ADMIN_URL"].rstrip("/") + "/metrics"
    ns = os.environ.get("KBP_ADMIN_NETNS", "kbp-appl")
    res = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "-m", "3", url],
                         capture_output=True, text=True)
    expect(res.returncode == 0, "GET %s in %s failed: %s" % (url, ns, res.stderr.strip()))
    pat = re.compile(os.environ.get("KBP_DROP_METRIC_RE", "drop"))
    total = 0.0
    for line in res.stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{\s]", line, 1)[0]
        if pat.search(name):
            try:
                total += float(line.rsplit(None, 1)[1])
            except (ValueError, IndexError):
                pass
    return total


def metric_sum(name, **labels):
    """Sum of the samples of metric `name` whose labels include `labels`."""
    url = os.environ["KBP_ADMIN_URL"].rstrip("/") + "/metrics"
    ns = os.environ.get("KBP_ADMIN_NETNS", "kbp-appl")
    res = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "-m", "3", url],
                         capture_output=True, text=True)
    expect(res.returncode == 0, "GET %s in %s failed: %s" % (url, ns, res.stderr.strip()))
    total = 0.0
    for line in res.stdout.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


@check("replies_reach_their_flow")
def _owners(ctx):
    # Every reply of every flow so far met its flow's state: none arrived on a worker
    # that did not own it (steering) and none outlived its flow.
    if not os.environ.get("KBP_ADMIN_URL"):
        return "KBP_ADMIN_URL unset: not checked"
    lost = metric_sum("kubypass_pipeline_drops_total", reason="no_flow")
    expect(lost == 0, "%g frames matched no flow (a reply on a worker without its flow?)" % lost)
    detail = "no frame without its flow"
    workers = int(os.environ.get("KBP_WORKERS", "1"))
    if workers > 1:
        steered = metric_sum("kubypass_steered_out_frames_total")
        expect(steered > 0, "%d workers but no frame was steered to its owner" % workers)
        detail += "; %d frames steered to their owners" % steered
    return detail


@check("established_flows_take_the_fast_path")
def _fast(ctx):
    # Each HTTP exchange so far: its SYN and SYN-ACK take the full pipeline, the ACKs,
    # data and FINs that follow the fast path (next hop cached in the flow).
    if not os.environ.get("KBP_ADMIN_URL"):
        return "KBP_ADMIN_URL unset: not checked"
    fast = metric_sum("kubypass_fast_path_frames_total")
    translated = metric_sum("kubypass_dnat_frames_total") + metric_sum(
        "kubypass_reverse_nat_frames_total")
    expect(translated > 0, "no frame was translated")
    expect(fast >= translated / 3,
           "only %d of %d translated frames took the fast path" % (fast, translated))
    return "%d of %d translated frames on the fast path" % (fast, translated)


@check("malformed_frames_then_serves")
def _malformed(ctx):
    dst = appliance_mac()
    with open("/sys/class/net/cl0/address") as f:
        src = f.read().strip()
    frames = malformed_frames(dst, src)
    metrics = bool(os.environ.get("KBP_ADMIN_URL"))
    before = drop_total() if metrics else None
    repeat = 10
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind(("cl0", 0))
        for _ in range(repeat):
            for _desc, _structural, frame in frames:
                s.send(frame)
    time.sleep(0.3)
    counts = tally(WEB, 30)
    expect(set(counts) <= THREE and sum(counts.values()) == 30, "after bad input: %s" % dict(counts))
    reply, peer = udp_exchange(ECHO, b"still there?")
    expect(peer == ECHO and reply.endswith(b": still there?"), "UDP after bad input: %r" % reply)
    detail = "%d kinds x %d sent; still serving" % (len(frames), repeat)
    if metrics:
        structural = int(os.environ.get("KBP_MIN_DROPS", sum(1 for f in frames if f[1]) * repeat))
        deadline = time.monotonic() + 3.0
        while True:
            rose = drop_total() - before
            if rose >= structural or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect(rose >= structural, "drop counters rose by %g, want >= %d" % (rose, structural))
        detail += "; drop counters +%g" % rose
    else:
        detail += " (KBP_ADMIN_URL unset: drop counters not checked)"
    return detail


# ---------------------------------------------------------------- runner


class Context:
    def __init__(self, args):
        self.mode = args.mode
        self.manifests = args.manifests
        self.csum_baseline = csum_errors()


def alarm(signum, frame):
    raise CheckFailed("check took too long")


def wait_ready(seconds, pid):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        if not appliance_alive(pid):
            return "the appliance process exited"
        try:
            if http_get(WEB, timeout=0.5) in THREE:
                return None
        except (OSError, CheckFailed) as e:
            last = e
        time.sleep(0.2)
    return last


def appliance_alive(pid):
    return pid is None or os.path.exists("/proc/%d" % pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("appliance", "kernel"), default="appliance")
    ap.add_argument("--manifests", required=True, help="the live manifest directory")
    ap.add_argument("--appliance-pid", type=int, help="fail if this process dies")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("-k", action="append", default=[], help="run only checks containing this")
    args = ap.parse_args()
    ctx = Context(args)
    signal.signal(signal.SIGALRM, alarm)

    t0 = time.monotonic()
    err = wait_ready(args.ready_timeout, args.appliance_pid)
    if err is not None:
        print("FAIL ready: %s:%d never answered in %.0fs (%s)" % (WEB + (args.ready_timeout, err)))
        print("0 passed, 1 failed")
        return 1
    print("ready after %.1fs (mode %s)" % (time.monotonic() - t0, args.mode), flush=True)

    passed = failed = skipped = 0
    for name, fn, timeout, kernel_differs in CHECKS:
        if args.k and not any(k in name for k in args.k):
            continue
        start = time.monotonic()
        signal.alarm(timeout)
        try:
            detail = fn(ctx)
            ok, msg = True, detail
        except (CheckFailed, OSError) as e:
            ok, msg = False, "%s: %s" % (type(e).__name__, e)
        finally:
            signal.alarm(0)
        took = time.monotonic() - start
        if ok and not appliance_alive(args.appliance_pid):
            ok, msg = False, "the appliance process died"
        if not ok and args.mode == "kernel" and kernel_differs:
            skipped += 1
            print("XFAIL %s (%.1fs): kernel baseline differs: %s; %s" % (name, took, kernel_differs, msg))
        elif ok:
            passed += 1
            print("PASS %s (%.1fs) %s" % (name, took, msg or ""))
        else:
            failed += 1
            print("FAIL %s (%.1fs) %s" % (name, took, msg))
        sys.stdout.flush()
    print("e2e (%s) took %.1fs" % (args.mode, time.monotonic() - t0))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
