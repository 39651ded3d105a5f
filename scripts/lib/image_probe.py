"""Small clients scripts/test-image needs, with the standard library only.

  stream-get NATS_HOST:PORT STREAM SEQ     prints the stored message SEQ of a JetStream stream as
                                           JSON {subject, headers, data} (JetStream's direct
                                           STREAM.MSG.GET API over the plain NATS protocol)
  stream-delete NATS_HOST:PORT STREAM      deletes the stream
  drain-post HOST:PORT PATH KEY BODY_FILE CONTAINER
                                           sends a webhook's headers and half its body, then has
                                           podman send SIGTERM to CONTAINER, waits 1 s, sends the
                                           rest and prints the answer as JSON {status, body,
                                           secs}: a request in flight while the pod is told to
                                           stop must still get its answer
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time


class Nats:
    """Just enough of the NATS client protocol for a request/reply."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self.sid = 0
        self.line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\nPING\r\n')
        while self.line() != b"PONG":
            pass

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def request(self, subject: str, payload: bytes) -> bytes:
        inbox = f"_INBOX.imagetest.{time.monotonic_ns()}"
        self.sid += 1
        self.sock.sendall(f"SUB {inbox} {self.sid}\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
        while True:
            line = self.line()
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                return self.take(int(line.split()[-1]))
            elif line.startswith(b"HMSG "):
                parts = line.split()
                total = int(parts[-1])
                body = self.take(total)
                hdr_len = int(parts[-2])
                headers = body[:hdr_len].decode(errors="replace")
                if " 503" in headers.splitlines()[0]:
                    raise RuntimeError(f"no responders for {subject}")
                return body[hdr_len:]
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())


def stream_get(addr: str, stream: str, seq: int) -> None:
    reply = json.loads(Nats(addr).request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode()))
    if "error" in reply:
        print(json.dumps({"error": reply["error"]}))
        sys.exit(1)
    msg = reply["message"]
    headers = {}
    raw = base64.b64decode(msg.get("hdrs", "")).decode()
    for h in raw.split("\r\n")[1:]:
        if ":" in h:
            k, v = h.split(":", 1)
            headers[k.strip()] = v.strip()
    print(json.dumps({"subject": msg["subject"], "headers": headers, "data": base64.b64decode(msg.get("data", "")).decode()}))


def stream_delete(addr: str, stream: str) -> None:
    print(Nats(addr).request(f"$JS.API.STREAM.DELETE.{stream}", b"").decode())


def drain_post(addr: str, path: str, key: str, body_file: str, container: str) -> None:
    host, port = addr.rsplit(":", 1)
    body = open(body_file, "rb").read()
    half = len(body) // 2
    started = time.monotonic()
    sock = socket.create_connection((host, int(port)), timeout=20)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:half])
    time.sleep(0.3)  # the request is being read: in flight
    subprocess.run(["podman", "kill", "--signal", "TERM", container], check=True, capture_output=True)
    time.sleep(1.0)
    sock.sendall(body[half:])
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    head_raw, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head_raw.split(b" ", 2)[1]) if head_raw else 0
    if b"transfer-encoding: chunked" in head_raw.lower():
        out, data = b"", rest
        while data:
            size, _, data = data.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, data = out + data[:n], data[n + 2 :]
        rest = out
    print(json.dumps({"status": status, "body": rest.decode(errors="replace"), "secs": round(time.monotonic() - started, 2)}))


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "stream-get":
        stream_get(args[0], args[1], int(args[2]))
    elif cmd == "stream-delete":
        stream_delete(args[0], args[1])
    elif cmd == "drain-post":
        drain_post(*args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
