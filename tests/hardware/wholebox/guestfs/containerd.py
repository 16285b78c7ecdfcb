"""containerd stand-in of the test box: the first step of containerd's gRPC transport.

On containerd's unix socket, read the client's HTTP/2 connection preface and
answer with an empty SETTINGS frame, as containerd's gRPC server does at
once; that handshake is what the agent's containerd probe checks.
"""

import contextlib
import socket
import sys
from pathlib import Path

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def serve(path: str) -> None:
    Path(path).unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(16)
        while True:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                received = b""
                with contextlib.suppress(OSError):
                    while len(received) < len(PREFACE):
                        piece = conn.recv(len(PREFACE) - len(received))
                        if not piece:
                            break
                        received += piece
                    if received == PREFACE:
                        conn.sendall(EMPTY_SETTINGS)


if __name__ == "__main__":
    serve(sys.argv[1])
