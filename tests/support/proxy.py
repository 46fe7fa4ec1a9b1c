"""A TCP relay between a client and the broker whose network a test can cut.

`cut()` closes every relayed connection and refuses new ones (the port stays bound, so
a client sees its connection drop and its reconnects refused, as when its network
goes); `restore()` lets connections through again.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType
from typing import Self


class CuttableLink:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open = True
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut_asked = False
        self._cut_done = threading.Event()
        self._stop = threading.Event()
        self._accepted = 0
        self._thread = threading.Thread(target=self._run, name="cuttable-link", daemon=True)

    @property
    def accepted(self) -> int:
        """How many connections were let through."""
        with self._lock:
            return self._accepted

    def start(self) -> Self:
        self._thread.start()
        return self

    def cut(self, timeout: float = 10.0) -> None:
        """Close every relayed connection (on the relay's thread) and refuse new ones."""
        with self._lock:
            self._open = False
            self._cut_asked = True
            self._cut_done.clear()
        if self._thread.is_alive() and not self._cut_done.wait(timeout):
            raise RuntimeError("the relay did not cut its connections")

    def restore(self) -> None:
        with self._lock:
            self._open = True

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

    def _run(self) -> None:
        self._listener.settimeout(0.1)
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ, None)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if key.data is None:
                        self._accept(selector)
                    else:
                        self._relay(selector, key.fileobj, key.data)  # type: ignore[arg-type]
                with self._lock:
                    asked, self._cut_asked = self._cut_asked, False
                if asked:
                    for a, b in list(self._pairs):
                        self._drop(selector, a, b)
                    self._cut_done.set()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            allowed = self._open
        if not allowed:
            _close(client)
            return
        try:
            upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
        except OSError:
            _close(client)
            return
        client.setblocking(False)
        upstream.setblocking(False)
        with self._lock:
            self._pairs.append((client, upstream))
            self._accepted += 1
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)

    def _relay(
        self, selector: selectors.BaseSelector, src: socket.socket, dst: socket.socket
    ) -> None:
        try:
            data = src.recv(65536)
            if data:
                dst.setblocking(True)
                dst.sendall(data)
                dst.setblocking(False)
                return
        except OSError:
            pass
        self._drop(selector, src, dst)

    def _drop(self, selector: selectors.BaseSelector, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if a not in p]
        for sock in (a, b):
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(sock)
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
