#!/usr/bin/env python3
"""Resident memory of a running keyward with many idle connections on each port, and
after they close (README, Failure modes). Standard library only.

    python3 crates/bench/idle.py PID GRPC_PORT HTTP_PORT [CONNECTIONS per kind, default 1000]

Kinds: a TCP connection that sends nothing (to each port); an HTTP/2 connection that
finished its handshake and then idles (gRPC port); an HTTP/1.1 keep-alive connection
idling after one request (HTTP port). Each kind is opened, measured, closed and
measured again, one after the other.
"""

import socket
import sys
import time

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    """RSS once the server has handled what was just sent (it stops moving)."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def silent(port):
    return socket.create_connection(("127.0.0.1", port))


def h2_idle(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(H2_PREFACE + H2_SETTINGS)
    sock.settimeout(5)
    sock.recv(4096)  # the server's SETTINGS
    sock.sendall(H2_SETTINGS_ACK)
    return sock


def http1_after_request(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /no-such-route HTTP/1.1\r\nHost: keyward\r\n\r\n")
    sock.settimeout(5)
    sock.recv(65536)
    return sock


def main():
    pid, grpc_port, http_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    kinds = [
        ("silent TCP, gRPC port", silent, grpc_port),
        ("silent TCP, HTTP port", silent, http_port),
        ("HTTP/2 after handshake, gRPC port", h2_idle, grpc_port),
        ("HTTP/1.1 after one request, HTTP port", http1_after_request, http_port),
    ]
    start = settle(pid)
    print(f"start: RSS {start / 1024:.1f} MiB; {count} connections per kind")
    for name, opener, port in kinds:
        before = settle(pid)
        socks = [opener(port) for _ in range(count)]
        held = settle(pid)
        for sock in socks:
            sock.close()
        after = settle(pid)
        per = (held - before) / count
        print(
            f"{name}: {before / 1024:.1f} -> {held / 1024:.1f} MiB with them open "
            f"({per:.1f} KiB each), {after / 1024:.1f} MiB after they closed"
        )


if __name__ == "__main__":
    main()
