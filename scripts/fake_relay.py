"""A loopback relay for checks: serves recorded frames over WebSocket.

Each connection to any path gets every frame of the frame files
(`[u32 LE length][frame]`..., uncompressed) as binary messages, then stays
open, answering pings, until the client closes. The cursor is ignored: a
reconnecting client gets the frames again (and counts them as duplicates).
Python standard library only.
"""

import base64
import hashlib
import socketserver
import struct
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_frames(paths):
    frames = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            if i + 4 > len(data):
                raise ValueError(f"{path}: cut length prefix at byte {i}")
            (n,) = struct.unpack_from("<I", data, i)
            if i + 4 + n > len(data):
                raise ValueError(f"{path}: cut frame at byte {i}")
            frames.append(data[i + 4 : i + 4 + n])
            i += 4 + n
    return frames


def ws_message(opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_message(sock):
    """One client message: (opcode, payload), unmasked."""
    b0, b1 = recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", recv_exact(sock, 8))
    mask = recv_exact(sock, 4) if b1 & 0x80 else b"\0\0\0\0"
    data = recv_exact(sock, n)
    return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


class Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, frames):
        super().__init__(addr, Handler)
        self.frames = frames
        self.connections = 0


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = sock.recv(4096)
            if not chunk:
                return
            req += chunk
        headers = {}
        for line in req.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        key = headers.get(b"sec-websocket-key")
        if key is None:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.server.connections += 1
        try:
            for f in self.server.frames:
                sock.sendall(ws_message(0x2, f))
            while True:
                op, data = read_message(sock)
                if op == 0x9:
                    sock.sendall(ws_message(0xA, data))
                elif op == 0x8:
                    sock.sendall(ws_message(0x8, data[:2]))
                    return
        except (ConnectionError, OSError):
            return


def start(frame_files, host="127.0.0.1", port=0):
    """Starts a relay in a thread; returns the server (`server_address`)."""
    server = Relay((host, port), read_frames(frame_files))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: fake_relay.py PORT FRAMEFILE...")
    srv = Relay(("127.0.0.1", int(sys.argv[1])), read_frames(sys.argv[2:]))
    print(f"serving {len(srv.frames)} frames on ws://127.0.0.1:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    srv.server_close()
