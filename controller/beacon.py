"""The controller's clock beacon: its time, for devices to measure their clocks against.

Every `every_s` seconds, and at once on each (re)connection to the broker (`soon()`, at
most once per `MIN_GAP_S`), the controller publishes
`{"v":1,"online":true,"now":T,"clock_tolerance_ms":N}` on the controller status topic,
not retained: a beacon is worth only as long as it is fresh, and the retained birth
stays what it is. Devices take their offset from it (`devices/clocksync.py`); a device
whose offset is beyond `clock_tolerance_ms` applies by the controller's time.

`now` is the controller's own clock (held steady through steps of the system clock,
`controller/steady.py`).
"""

from __future__ import annotations

import logging
import threading

from controller.broker.base import Broker
from devices.clock import TimeSource
from devices.protocol import ControllerStatus, Topics, encode

log = logging.getLogger(__name__)

MIN_GAP_S = 1.0
"""The shortest time between two beacons, however many devices come online."""


class ClockBeacon:
    def __init__(
        self,
        broker: Broker,
        topics: Topics,
        clock: TimeSource,
        *,
        every_s: float,
        tolerance_ms: int,
    ) -> None:
        self.broker = broker
        self.topic = topics.controller_status
        self.clock = clock
        self.every_s = every_s
        self.tolerance_ms = tolerance_ms
        self.sent = 0
        self._last: float | None = None
        self._due = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="clock-beacon", daemon=True)

    # the broker's connection events ----------------------------------------------

    def connected(self) -> None:
        self.soon()

    def disconnected(self) -> None:
        pass

    # the thread --------------------------------------------------------------------

    def start(self) -> None:
        self.broker.add_listener(self)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def soon(self) -> None:
        """Send a beacon soon (the connection came up).

        Not on a device's birth: every beacon reaches every device, so a beacon per
        birth would send N messages for each of N births in a connection storm (at
        10,000 devices, 10,000 a second to the fleet for minutes). A device hears the
        next periodic one, and it waits for several anyway (`devices/clocksync.py`)."""
        self._due = True
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.wait_s())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:
                log.exception("clock beacon failed; will retry")

    def wait_s(self) -> float:
        """How long the thread may sleep before `step` has work."""
        if self._last is None:
            return MIN_GAP_S
        since = self.clock.monotonic() - self._last
        if self._due:
            return max(0.0, MIN_GAP_S - since)
        return max(0.0, self.every_s - since)

    # one round (the unit tests call it directly) -----------------------------------

    def step(self) -> bool:
        """Send a beacon if one is due; True when it was handed to the broker."""
        mono = self.clock.monotonic()
        if self._last is not None:
            since = mono - self._last
            if since < MIN_GAP_S or (not self._due and since < self.every_s):
                return False
        if not self.broker.is_connected:
            return False
        body = ControllerStatus(online=True, now=self.clock(), clock_tolerance_ms=self.tolerance_ms)
        if not self.broker.announce(self.topic, encode(body)):
            return False
        self._last, self._due = mono, False
        self.sent += 1
        return True
