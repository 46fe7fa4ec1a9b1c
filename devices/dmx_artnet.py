"""Art-Net output, on the `pyartnet` package's node (ArtDmx to one node, unicast).

- Universes are 15-bit port-addresses, 0-32767 (net, sub-net and universe together).
- Each universe is sent as soon as it changes and again every second while it does not
  (Art-Net nodes treat a silent controller as gone after a few seconds).
- With `sync`, an ArtSync follows each round of ArtDmx packets, so the node outputs
  every universe at the same instant.

`pyartnet` runs on asyncio: the output keeps an event loop on a thread of its own, and
`send` hands the frames to it and waits until they are set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from pyartnet.base.channel import Channel
from pyartnet.impl_artnet.node import ArtNetNode

from devices.dmx import SLOTS
from devices.dmx_output import OutputStopped, check_frames

log = logging.getLogger(__name__)
T = TypeVar("T")

ARTNET_PORT = 6454
UNIVERSES = range(0, 32768)
REFRESH_S = 1.0
"""How often an unchanged universe is sent again."""
MAX_FPS = 40
HANDOFF_S = 2.0
"""How long `send` and `stop` wait for the output's loop."""


def check_universe(universe: int) -> int:
    if isinstance(universe, bool) or not isinstance(universe, int) or universe not in UNIVERSES:
        raise ValueError(f"Art-Net universes run 0-32767, not {universe!r}")
    return universe


class ArtNetOutput:
    """Sends frames as ArtDmx to the node at `host`:`port`."""

    protocol = "Art-Net"
    universes = UNIVERSES

    def __init__(
        self,
        host: str,
        *,
        port: int = ARTNET_PORT,
        sync: bool = False,
        refresh_s: float = REFRESH_S,
    ) -> None:
        if not host:
            raise ValueError("Art-Net needs the node's address")
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is outside 1-65535")
        self.host = host
        self.port = port
        self.sync = sync
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._node: ArtNetNode | None = None
        self._channels: dict[int, Channel] = {}
        self._entered = False
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                raise OutputStopped("the Art-Net output was stopped; make a new one")
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="Art-Net", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                self._node = self._call(self._create())
            except BaseException:
                self._close_loop()
                raise
        sync = ", synchronised (ArtSync)" if self.sync else ""
        log.info("Art-Net output to %s port %d%s", self.host, self.port, sync)

    async def _create(self) -> ArtNetNode:
        node = ArtNetNode.create(
            self.host, self.port, max_fps=MAX_FPS, refresh_every=self.refresh_s
        )
        if self.sync:
            node.set_synchronous_mode(True)
        return node

    def send(self, frames: Mapping[int, bytes]) -> None:
        checked = check_frames(frames, self.universes, self.protocol)
        with self._lock:
            if self._loop is None or self._stopped:
                raise OutputStopped("the Art-Net output is not running")
            self._call(self._set(checked))

    async def _set(self, frames: dict[int, bytes]) -> None:
        node = self._node
        assert node is not None
        for universe, frame in frames.items():
            channel = self._channels.get(universe)
            if channel is None:
                channel = node.add_universe(universe).add_channel(start=1, width=SLOTS)
                self._channels[universe] = channel
            channel.set_values(list(frame))
        if not self._entered:
            # opens the socket and starts the refresh; only once a universe exists
            await node.__aenter__()
            self._entered = True

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._loop is None:
                return
            try:
                if self._entered and self._node is not None:
                    self._call(self._node.__aexit__(None, None, None))
            finally:
                self._close_loop()
        log.info("Art-Net output stopped")

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the output's loop and wait for its result."""
        loop = self._loop
        assert loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=HANDOFF_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the Art-Net output did not answer within {HANDOFF_S:g} s"
            ) from None

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=HANDOFF_S)
        loop.close()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._loop is not None and not self._stopped
