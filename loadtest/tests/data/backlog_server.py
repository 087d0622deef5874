#!/usr/bin/env python3
"""A small TCP server for the synack-load tests (standard library only, python 3.9+).

It listens with exactly the backlog it is given and serves at most N connections at once:
the accept loop takes a slot before it calls accept(), so while N connections are being
served the others wait in the kernel's accept queue (as with Tomcat's maxConnections).
Each connection: read what request bytes arrive within 50 ms, sleep --service-ms, send
--answer, close.

Its only stdout line, once it listens: "listening HOST:PORT backlog B" (--port 0 takes
a free port, and the line names it). SIGTERM (or SIGINT) ends it promptly with status 0.
A port already taken: the error on stderr, status 1.
"""

import argparse
import signal
import socket
import sys
import threading
import time

READ_WINDOW_S = 0.05


def unescape(text):
    """The answer as given on the command line, with \\n \\r \\t \\\\ understood."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "nrt\\":
                out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[nxt])
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


def serve(conn, slots, service_s, answer):
    try:
        # Whatever request bytes arrive within the window, never blocking past it; the end
        # of an HTTP request head ends the wait early.
        deadline = time.monotonic() + READ_WINDOW_S
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            try:
                data = conn.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            got += data
            if b"\r\n\r\n" in got:
                break
        if service_s > 0:
            time.sleep(service_s)
        conn.settimeout(5.0)
        conn.sendall(answer)
    except OSError:
        pass  # the client went away (reset, timeout): nothing to answer
    finally:
        try:
            conn.close()
        finally:
            slots.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backlog", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--service-ms", type=float, default=2.0)
    ap.add_argument("--answer", default="ok\n")
    args = ap.parse_args()
    if args.workers < 1:
        ap.error("--workers must be at least 1")

    def stop(_signum, _frame):
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    answer = unescape(args.answer).encode("utf-8")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
        listener.listen(args.backlog)
    except OSError as e:
        print(f"backlog_server: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(1)
    host, port = listener.getsockname()[:2]
    print(f"listening {host}:{port} backlog {args.backlog}", flush=True)

    slots = threading.BoundedSemaphore(args.workers)
    service_s = args.service_ms / 1000.0
    try:
        while True:
            slots.acquire()
            try:
                conn, _peer = listener.accept()
            except OSError as e:
                slots.release()
                print(f"backlog_server: accept: {e}", file=sys.stderr, flush=True)
                time.sleep(0.01)
                continue
            threading.Thread(
                target=serve, args=(conn, slots, service_s, answer), daemon=True
            ).start()
    finally:
        listener.close()


if __name__ == "__main__":
    main()
