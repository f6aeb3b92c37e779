#!/usr/bin/env python3
"""Kernel baseline for the lab: Service manifests -> one nftables table (kube-proxy-like).

Used by `scripts/lab.sh up --kernel` in the appliance namespace, where the kernel routes
between the client and backend sides. It does what kube-proxy's nftables mode does, in
miniature, so the e2e suite can be validated without kubypass and gives a kernel baseline:

  - frontends: spec.clusterIPs x ports, spec.externalIPs x ports,
    status.loadBalancer.ingress[].ip x ports, --node-ip x nodePort;
  - backends: EndpointSlices labelled kubernetes.io/service-name=<service>, the slice port
    named like the Service port (this is how a named targetPort resolves); ready endpoints,
    or serving+terminating ones when none is ready;
  - DNAT with `numgen random` (sessionAffinity None) or `jhash ip saddr` (ClientIP: the same
    client always maps to the same backend while the set is unchanged; there is no timeout);
  - no endpoints: TCP reset / ICMP port unreachable (filter forward and input hooks);
  - ExternalName Services and Services labelled service.kubernetes.io/service-proxy-name
    are skipped. IPv4 only (the lab is IPv4 only).

Reverse translation and drain are conntrack's: established flows keep their backend when a
ruleset change removes it. With --watch the manifest directory is polled every 100 ms and the
table is replaced atomically (one `nft -f` transaction) whenever a file changes.
With --metrics ADDR:PORT it also serves /healthz and a Prometheus /metrics whose
kbp_lab_kernel_drops_total are the namespace's kernel IP/TCP/UDP error counters from
/proc/net/snmp (so the e2e harness's metrics path can be exercised without kubypass).
Needs PyYAML (Debian: python3-yaml).
"""

import argparse
import http.server
import ipaddress
import threading
import os
import subprocess
import sys
import time

import yaml

TABLE = "kbp_lab"


def load_objects(directory):
    objs = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(directory, name)) as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict):
                    objs.append(doc)
    return objs


def is_v4(addr):
    try:
        return isinstance(ipaddress.ip_address(addr), ipaddress.IPv4Address)
    except ValueError:
        return False


def backends_for(svc_ns, svc_name, port, slices):
    """(address, port) of the endpoints serving Service port `port`."""
    ready, terminating = [], []
    for sl in slices:
        meta = sl.get("metadata", {})
        labels = meta.get("labels") or {}
        if meta.get("namespace", "default") != svc_ns:
            continue
        if labels.get("kubernetes.io/service-name") != svc_name:
            continue
        if sl.get("addressType") != "IPv4":
            continue
        number = None
        for sp in sl.get("ports") or []:
            if (sp.get("name") or "") == (port.get("name") or "") and sp.get(
                "protocol", "TCP"
            ) == port.get("protocol", "TCP"):
                number = sp.get("port")
        if number is None:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            addrs = [a for a in ep.get("addresses") or [] if is_v4(a)]
            if not addrs:
                continue
            if cond.get("ready", True) is not False:
                ready.append((addrs[0], int(number)))
            elif cond.get("serving") and cond.get("terminating"):
                terminating.append((addrs[0], int(number)))
    chosen = ready or terminating
    return sorted(set(chosen))


def ruleset(objs, node_ips):
    services = [o for o in objs if o.get("kind") == "Service"]
    slices = [o for o in objs if o.get("kind") == "EndpointSlice"]
    dnat, reject = [], []
    for svc in services:
        meta = svc.get("metadata", {})
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        if "service.kubernetes.io/service-proxy-name" in (meta.get("labels") or {}):
            continue
        ns, name = meta.get("namespace", "default"), meta.get("name")
        vips = list(spec.get("clusterIPs") or [spec.get("clusterIP")])
        vips += spec.get("externalIPs") or []
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ing.get("ip"):
                vips.append(ing["ip"])
        vips = [v for v in vips if v and v != "None" and is_v4(v)]
        affinity = spec.get("sessionAffinity") == "ClientIP"
        for port in spec.get("ports") or []:
            proto = port.get("protocol", "TCP").lower()
            if proto not in ("tcp", "udp"):
                continue
            fronts = [(v, int(port["port"])) for v in vips]
            if port.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                fronts += [(n, int(port["nodePort"])) for n in node_ips]
            bes = backends_for(ns, name, port, slices)
            for vip, vport in fronts:
                match = "ip daddr %s %s dport %d" % (vip, proto, vport)
                if not bes:
                    how = "with tcp reset" if proto == "tcp" else "with icmp type port-unreachable"
                    reject.append("%s reject %s" % (match, how))
                    continue
                pick = "jhash ip saddr mod %d" if affinity else "numgen random mod %d"
                elems = ", ".join("%d : %s . %d" % (i, a, p) for i, (a, p) in enumerate(bes))
                dnat.append(
                    "%s dnat ip to %s map { %s }" % (match, pick % len(bes), elems)
                )
    out = ["table ip %s" % TABLE, "delete table ip %s" % TABLE, "table ip %s {" % TABLE]
    out.append("  chain prerouting {")
    out.append("    type nat hook prerouting priority dstnat; policy accept;")
    out += ["    " + r for r in dnat]
    out.append("  }")
    for hook in ("forward", "input"):
        out.append("  chain reject_%s {" % hook)
        out.append("    type filter hook %s priority filter; policy accept;" % hook)
        out += ["    " + r for r in reject]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def apply(directory, node_ips, verbose):
    text = ruleset(load_objects(directory), node_ips)
    res = subprocess.run(["nft", "-f", "-"], input=text, text=True, capture_output=True)
    if res.returncode != 0:
        sys.stderr.write(text + res.stderr)
        return False
    if verbose:
        sys.stdout.write(text)
        sys.stdout.flush()
    return True


def snapshot(directory):
    try:
        return sorted(
            (e.name, e.stat().st_mtime_ns, e.stat().st_size)
            for e in os.scandir(directory)
            if not e.name.startswith(".")
        )
    except OSError:
        return None


DROP_COUNTERS = {
    "Ip": ("InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards", "InTruncatedPkts"),
    "Tcp": ("InErrs", "InCsumErrors"),
    "Udp": ("InErrors", "InCsumErrors"),
}
RELOADS = [0]


def metrics_text():
    lines = ["# TYPE kbp_lab_kernel_drops_total counter"]
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f]
    for head, vals in zip(rows[::2], rows[1::2]):
        proto = head[0].rstrip(":")
        for name, val in zip(head[1:], vals[1:]):
            if name in DROP_COUNTERS.get(proto, ()):
                lines.append('kbp_lab_kernel_drops_total{counter="%s:%s"} %s' % (proto, name, val))
    lines.append("# TYPE kbp_lab_reloads_total counter")
    lines.append("kbp_lab_reloads_total %d" % RELOADS[0])
    return "\n".join(lines) + "\n"


class AdminHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/metrics":
            body, code = metrics_text().encode(), 200
        elif self.path == "/healthz":
            body, code = b"ok\n", 200
        else:
            body, code = b"not found\n", 404
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def serve_admin(listen):
    host, _, port = listen.rpartition(":")
    srv = http.server.ThreadingHTTPServer((host, int(port)), AdminHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifests", help="directory of Service/EndpointSlice YAML files")
    ap.add_argument("--node-ip", action="append", default=[], help="node address for NodePorts")
    ap.add_argument("--watch", action="store_true", help="re-apply whenever a file changes")
    ap.add_argument("--print", action="store_true", help="print the ruleset, apply nothing")
    ap.add_argument("--delete", action="store_true", help="remove the table and exit")
    ap.add_argument("--metrics", metavar="ADDR:PORT", help="serve /metrics and /healthz")
    args = ap.parse_args()
    if args.delete:
        subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)
        return 0
    if args.print:
        sys.stdout.write(ruleset(load_objects(args.manifests), args.node_ip))
        return 0
    ok = apply(args.manifests, args.node_ip, True)
    if args.metrics:
        serve_admin(args.metrics)
    if not args.watch:
        return 0 if ok else 1
    seen = snapshot(args.manifests)
    while True:
        time.sleep(0.1)
        now = snapshot(args.manifests)
        if now != seen:
            seen = now
            try:
                ok = apply(args.manifests, args.node_ip, True)
                RELOADS[0] += 1
            except (OSError, yaml.YAMLError) as e:  # a half-written file: retry next change
                sys.stderr.write("reload failed: %s\n" % e)
                seen = None
            print("reload %s at %.3f" % ("ok" if ok else "FAILED", time.time()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
