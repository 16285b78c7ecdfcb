"""A slow link for benchmarks: a TCP proxy on 127.0.0.1 with one shared token bucket.

nginx's ``limit_rate`` limits each response on its own, so a client that
opens four connections gets four times the rate. A link is shared: this proxy
sends everything the server answers, over all connections together, at no
more than ``rate`` bytes per second (a burst of 64 KiB), like one metered
uplink in front of the box. Requests go through unthrottled (they are tiny).
Runs an asyncio loop on its own thread; ``close()`` stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self.lock:  # one sender at a time: the link is shared fairly in order
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                await asyncio.sleep((n - self.tokens) / self.rate)


class SlowLink:
    """``SlowLink(upstream_port, rate)``: connect to ``127.0.0.1:link.port`` instead."""

    def __init__(self, upstream_port: int, rate: float, burst: int = 64 << 10) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.burst = burst
        self.port = 0
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name="slow-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("slow link did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        bucket = _Bucket(self.rate, self.burst)

        async def pipe(reader: Any, writer: Any, throttle: bool) -> None:
            try:
                while True:
                    data = await reader.read(16 << 10)
                    if not data:
                        break
                    if throttle:
                        await bucket.take(len(data))
                        self.sent += len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        async def handle(client_r: Any, client_w: Any) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(pipe(client_r, up_w, False), pipe(up_r, client_w, True))

        async def start() -> None:
            self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=10)
