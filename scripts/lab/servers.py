#!/usr/bin/env python3
"""Lab backend servers: each backend answers with its own identity.

Run inside the backend namespace by scripts/lab.sh. For every `NAME=ADDRESS` given it
serves, on ADDRESS:
  - HTTP/1.1 (keep-alive) on --http-port (8080): body "NAME\n";
  - HTTP/1.1 on --alt-port (8081, the Pods' named port "http-alt"): body "NAME:8081\n";
  - UDP echo on --udp-port (9000): replies "NAME: " + the datagram it received.
Every HTTP response also carries "X-Backend: NAME" and "X-Client: ip:port" (the source the
server saw, so tests can check that no source NAT happened). When all sockets are bound it
writes --ready FILE. Standard library only.
"""

import argparse
import http.server
import socket
import socketserver
import sys
import threading


def http_handler(body: bytes, name: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kbp-lab"

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.send_header("X-Client", "%s:%d" % self.client_address[:2])
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # quiet: 300-request tests
            pass

    return Handler


class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def udp_echo(sock: socket.socket, name: str):
    prefix = name.encode() + b": "
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(prefix + data, peer)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backends", nargs="+", help="NAME=ADDRESS")
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--alt-port", type=int, default=8081)
    ap.add_argument("--udp-port", type=int, default=9000)
    ap.add_argument("--ready", help="file written once every socket is bound")
    args = ap.parse_args()

    threads = []
    for spec in args.backends:
        name, _, addr = spec.partition("=")
        if not addr:
            ap.error("backend must be NAME=ADDRESS: %r" % spec)
        for port, body in (
            (args.http_port, name + "\n"),
            (args.alt_port, "%s:%d\n" % (name, args.alt_port)),
        ):
            srv = HTTPServer((addr, port), http_handler(body.encode(), name))
            threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        usock.bind((addr, args.udp_port))
        threads.append(threading.Thread(target=udp_echo, args=(usock, name), daemon=True))
    for t in threads:
        t.start()
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("ready\n")
    print("serving %d backends" % len(args.backends), flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
