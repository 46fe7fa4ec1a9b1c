"""A TCP relay between clients and the broker whose network a test can break.

- `cut()` closes every relayed connection and refuses new ones (the port stays bound, so
  a client sees its connection drop and its reconnects refused, as when its network
  goes); `restore()` lets connections through again.
- `latency_s` delays every chunk, in both directions, by that many seconds (in order).
- `blackhole("up" | "down" | "both")` silently drops what flows client -> broker
  ("up") or broker -> client ("down"), on every connection, new ones too, without
  closing anything: a one-way partition. `blackhole(None)` ends it.
- `reset()` ends every relayed connection with a TCP RST (both sides), as a middlebox
  that forgets its connections does; new connections are let through.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

Direction = Literal["up", "down", "both"]


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    # chunks waiting for their due time (monotonic), per destination socket
    delayed: dict[socket.socket, deque[tuple[float, bytes]]] = field(default_factory=dict)


class CuttableLink:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self._listener = socket.create_server((host, 0), backlog=4096)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open = True
        self._pairs: list[_Pair] = []
        self._asked: list[str] = []
        self._done = threading.Condition(self._lock)
        self._served = 0
        self._stop = threading.Event()
        self._accepted = 0
        self.latency_s = 0.0
        self._blackhole: Direction | None = None
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._run, name="cuttable-link", daemon=True)

    @property
    def accepted(self) -> int:
        """How many connections were let through."""
        with self._lock:
            return self._accepted

    @property
    def connections(self) -> int:
        """How many relayed connections are open now."""
        with self._lock:
            return len(self._pairs)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _ask(self, what: str, timeout: float) -> None:
        """Have the relay's thread do `what` to every connection, and wait until it did."""
        with self._lock:
            self._asked.append(what)
            target = self._served + len(self._asked)
            if not self._thread.is_alive():
                return
            if not self._done.wait_for(lambda: self._served >= target, timeout):
                raise RuntimeError(f"the relay did not {what} its connections")

    def cut(self, timeout: float = 10.0) -> None:
        """Close every relayed connection (on the relay's thread) and refuse new ones."""
        with self._lock:
            self._open = False
        self._ask("cut", timeout)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def reset(self, timeout: float = 10.0) -> None:
        """Send a TCP RST on both sides of every relayed connection."""
        self._ask("reset", timeout)

    def blackhole(self, direction: Direction | None) -> None:
        """Drop what flows in `direction` from now on (None: let it flow again)."""
        with self._lock:
            self._blackhole = direction

    def stop(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ the relay's thread

    def _run(self) -> None:
        self._listener.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ, None)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=self._wait_s()):
                    if key.data is None:
                        self._accept(selector)
                    else:
                        pair, src = key.data
                        self._relay(selector, pair, src)
                self._flush_due(selector)
                with self._lock:
                    asked, self._asked = self._asked, []
                for what in asked:
                    for pair in list(self._pairs):
                        self._drop(selector, pair, rst=what == "reset")
                if asked:
                    with self._lock:
                        self._served += len(asked)
                        self._done.notify_all()

    def _wait_s(self) -> float:
        soonest = min((q[0][0] for p in self._pairs for q in p.delayed.values() if q), default=None)
        if soonest is None:
            return 0.05
        return max(0.0, min(0.05, soonest - time.monotonic()))

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                allowed = self._open
            if not allowed:
                _close(client)
                continue
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            client.setblocking(False)
            upstream.setblocking(False)
            pair = _Pair(client, upstream, {client: deque(), upstream: deque()})
            with self._lock:
                self._pairs.append(pair)
                self._accepted += 1
            selector.register(client, selectors.EVENT_READ, (pair, client))
            selector.register(upstream, selectors.EVENT_READ, (pair, upstream))

    def _relay(self, selector: selectors.BaseSelector, pair: _Pair, src: socket.socket) -> None:
        try:
            data = src.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, pair)
            return
        direction = "up" if src is pair.client else "down"
        dst = pair.upstream if src is pair.client else pair.client
        with self._lock:
            hole = self._blackhole
            latency = self.latency_s
        if hole in (direction, "both"):
            self.dropped_bytes += len(data)
            return
        queue = pair.delayed[dst]
        if latency > 0 or queue:
            queue.append((time.monotonic() + latency, data))
            return
        self._send(selector, pair, dst, data)

    def _flush_due(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for pair in list(self._pairs):
            for dst, queue in pair.delayed.items():
                while queue and queue[0][0] <= now:
                    _due, data = queue.popleft()
                    if not self._send(selector, pair, dst, data):
                        break

    def _send(
        self, selector: selectors.BaseSelector, pair: _Pair, dst: socket.socket, data: bytes
    ) -> bool:
        try:
            dst.setblocking(True)
            dst.settimeout(10)
            dst.sendall(data)
            dst.setblocking(False)
            return True
        except OSError:
            self._drop(selector, pair)
            return False

    def _drop(self, selector: selectors.BaseSelector, pair: _Pair, *, rst: bool = False) -> None:
        with self._lock:
            if pair not in self._pairs:
                return
            self._pairs.remove(pair)
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(sock)
            if rst:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            else:
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
