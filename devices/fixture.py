"""The light output an agent drives: an interface, and a simulated fixture for tests/demos.

A real fixture (DMX over sACN or Art-Net) implements the same two members. `apply`
returns what the fixture *now outputs*, which is what the agent reports in its acks:
a fixture that clamps or quantises reports the clamped value, not the request.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol, runtime_checkable

from devices.clock import Clock, system_clock
from devices.protocol import OFF, LightState


@runtime_checkable
class Fixture(Protocol):
    """Something that shows a `LightState`."""

    def apply(self, state: LightState) -> LightState:
        """Show `state`; return what the fixture outputs afterwards.

        Raise an exception when the output could not be set: the agent then acks
        `failed` with the exception's message as the reason. It runs on the device's
        event-loop thread, so it must return quickly (hand slow I/O to a thread).
        """
        ...

    @property
    def current(self) -> LightState:
        """What the fixture outputs now."""
        ...


class SimulatedFixture:
    """An in-memory fixture. Thread-safe; keeps the history of what it applied."""

    def __init__(self, *, clock: Clock = system_clock, initial: LightState = OFF) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._current = initial
        self._history: list[tuple[datetime, LightState]] = []

    def apply(self, state: LightState) -> LightState:
        with self._lock:
            self._current = state
            self._history.append((self._clock(), state))
            return state

    @property
    def current(self) -> LightState:
        with self._lock:
            return self._current

    @property
    def history(self) -> list[tuple[datetime, LightState]]:
        """(instant by the fixture's clock, state) for every `apply`, oldest first."""
        with self._lock:
            return list(self._history)
