"""Where DMX frames go: the `DmxOutput` interface, and an in-memory output for tests.

The real outputs are `devices.dmx_sacn.SacnOutput` (E1.31) and
`devices.dmx_artnet.ArtNetOutput`. Each takes whole frames (512 slot values a universe)
and keeps sending the last frame of every universe until it is stopped, since DMX
receivers drop a source that falls silent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from devices.dmx import SLOTS


class OutputStopped(RuntimeError):
    """A frame was sent to an output that is not started, or already stopped."""


@runtime_checkable
class DmxOutput(Protocol):
    """A DMX-over-IP sender."""

    @property
    def protocol(self) -> str:
        """The protocol's name for messages ("sACN", "Art-Net", "simulated DMX")."""
        ...

    @property
    def universes(self) -> range:
        """The universe numbers the protocol allows."""
        ...

    def start(self) -> None:
        """Open the socket and start the keep-alive. Nothing is sent before the first frame."""
        ...

    def send(self, frames: Mapping[int, bytes]) -> None:
        """Send each universe's frame (at most 512 values; fewer are padded with 0).

        Universes sent together switch together (synchronised, where the output is set to).
        Raises `OutputStopped` when the output is not running, ValueError on a bad frame.
        It returns quickly: the frames are on the wire, or handed to the sending thread.
        """
        ...

    def stop(self) -> None:
        """Stop cleanly (sACN: stream-terminated packets). A second call does nothing."""
        ...


def check_frames(frames: Mapping[int, bytes], universes: range, protocol: str) -> dict[int, bytes]:
    """The frames padded to 512 slots; ValueError for a universe or frame out of range."""
    checked: dict[int, bytes] = {}
    for universe, frame in frames.items():
        if universe not in universes:
            raise ValueError(
                f"{protocol} universes run {universes.start}-{universes.stop - 1}, not {universe}"
            )
        if len(frame) > SLOTS:
            raise ValueError(f"a DMX frame has at most {SLOTS} slots, not {len(frame)}")
        checked[universe] = bytes(frame) + bytes(SLOTS - len(frame))
    return checked


class MemoryDmxOutput:
    """An output that keeps what it was sent. Thread-safe."""

    protocol = "simulated DMX"

    def __init__(self, universes: range = range(0, 64000)) -> None:
        self.universes = universes
        self._lock = threading.Lock()
        self._running = False
        self._stopped = False
        self._frames: dict[int, bytes] = {}
        self._history: list[dict[int, bytes]] = []

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                raise OutputStopped("the output was stopped; make a new one")
            self._running = True

    def send(self, frames: Mapping[int, bytes]) -> None:
        checked = check_frames(frames, self.universes, self.protocol)
        with self._lock:
            if not self._running:
                raise OutputStopped("the DMX output is not running")
            self._frames.update(checked)
            self._history.append(checked)

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._stopped = True

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running

    @property
    def frames(self) -> dict[int, bytes]:
        """The last frame of every universe sent."""
        with self._lock:
            return dict(self._frames)

    @property
    def history(self) -> list[dict[int, bytes]]:
        """Every `send`, oldest first, as the frames it carried."""
        with self._lock:
            return list(self._history)
