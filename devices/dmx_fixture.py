"""A `Fixture` made of DMX heads: every head shows the agent's state, through one output.

A monument may have several floodlights, on one universe or several: every head shows
the same state, and one `send` carries every universe, so they switch together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from devices.dmx import Head, check_overlaps, render
from devices.dmx_output import DmxOutput
from devices.protocol import OFF, LightState

log = logging.getLogger(__name__)


class DmxFixture:
    """Drives `heads` through `output`. The output is started on the first `apply`."""

    def __init__(self, heads: Sequence[Head], output: DmxOutput) -> None:
        if not heads:
            raise ValueError("a DMX fixture needs at least one head")
        check_overlaps(heads)
        for head in heads:
            if head.universe not in output.universes:
                raise ValueError(
                    f"{head.label()}: {output.protocol} universes run "
                    f"{output.universes.start}-{output.universes.stop - 1}"
                )
        self.heads = tuple(heads)
        self.output = output
        self._lock = threading.Lock()
        self._current = OFF
        self._frames: dict[int, bytes] = {}
        self._started = False
        self._closed = False

    def apply(self, state: LightState) -> LightState:
        frames = render(self.heads, state, self._frames)
        with self._lock:
            if self._closed:
                raise RuntimeError("the DMX output is closed")
            if not self._started:
                self.output.start()
                self._started = True
            self.output.send(frames)
            self._frames = frames
            # DMX jumps to the new values: no fade is run, so none is reported
            self._current = state.model_copy(update={"transition_s": 0})
            log.info("%s: %s", self.output.protocol, self._describe(frames))
            return self._current

    @property
    def current(self) -> LightState:
        with self._lock:
            return self._current

    @property
    def frames(self) -> dict[int, bytes]:
        """The last frame sent to every universe."""
        with self._lock:
            return dict(self._frames)

    def close(self) -> None:
        """Stop the output (sACN sends its stream-terminated packets). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            self.output.stop()

    def _describe(self, frames: dict[int, bytes]) -> str:
        parts = []
        for head in self.heads:
            values = frames[head.universe][head.address - 1 : head.slots.stop - 1]
            parts.append(f"{head.label()} {head.layout.value}={list(values)}")
        return "; ".join(parts)
