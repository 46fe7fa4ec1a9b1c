"""The controller's time as a device learns it from the controller's clock beacons.

The controller publishes its time (`ControllerStatus.now`, not retained) every few
seconds. Each beacon that arrives says "the controller's clock read `now` at most the
transit time ago", so `now - local arrival` is the true offset minus that transit: never
more than the true offset. `ControllerTime` keeps the latest `SAMPLES` beacons and takes
the largest, the one that travelled fastest (a beacon held up somewhere only lowers its
own sample, and is outvoted).

Samples are kept against the monotonic clock, not the wall clock: the controller's time
is estimated as `monotonic() + base`, so a step of the device's own wall clock (someone
set it, NTP woke up) changes the offset at once, without waiting for a beacon.

`correction()` is what the device adds to its own clock to apply by the controller's
time: the measured offset when it is beyond the tolerance, otherwise nothing (a device
whose own clock is good enough keeps it: the beacons are no better than their transit).

A one-way beacon cannot tell a slow trip from a clock that runs ahead, so one sample is
not enough to act on: in a connection storm the first beacons a device hears may have
waited a minute or more on the way, and a device that trusted one would switch that
much late. The estimate counts only once it rests on `MIN_SAMPLES` beacons received over
at least `MIN_SPAN_S` (a storm passes; the fastest of several beacons over a minute is a
fair measure); until then the device keeps its own clock and reports no offset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from devices.clock import Clock
from devices.protocol import MAX_CLOCK_OFFSET_MS

SAMPLES = 16
"""Beacons kept: at one beacon per 30 s, the estimate rests on the last 8 minutes."""
MIN_SAMPLES = 3
"""Beacons needed before the estimate counts."""
MIN_SPAN_S = 60.0
"""Least time, on the device's monotonic clock, from the first to the last of those."""
DEFAULT_TOLERANCE_MS = 1000
"""Used until a beacon names the controller's tolerance."""
_EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


class ControllerTime:
    def __init__(
        self,
        clock: Clock,
        monotonic: Callable[[], float],
        *,
        samples: int = SAMPLES,
        tolerance_ms: int = DEFAULT_TOLERANCE_MS,
        min_samples: int = MIN_SAMPLES,
        min_span_s: float = MIN_SPAN_S,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._bases: deque[float] = deque(maxlen=samples)
        self._arrivals: deque[float] = deque(maxlen=samples)
        self.tolerance_ms = tolerance_ms
        self.min_samples = max(1, min(min_samples, samples))
        self.min_span_s = min_span_s

    def observe(self, controller_now: datetime, tolerance_ms: int | None = None) -> None:
        """A beacon arrived (call it on arrival): the controller's clock read
        `controller_now` when it was sent."""
        arrival = self._monotonic()
        self._bases.append((controller_now - _EPOCH).total_seconds() - arrival)
        self._arrivals.append(arrival)
        if tolerance_ms is not None:
            self.tolerance_ms = tolerance_ms

    def settled(self) -> bool:
        """Enough beacons, over long enough, for the estimate to count."""
        return (
            len(self._bases) >= self.min_samples
            and self._arrivals[-1] - self._arrivals[0] >= self.min_span_s
        )

    def offset_ms(self) -> int | None:
        """The controller's clock minus this device's, in ms (None until `settled`)."""
        if not self.settled():
            return None
        controller = _EPOCH + timedelta(seconds=self._monotonic() + max(self._bases))
        return round((controller - self._clock()).total_seconds() * 1000)

    def reported_ms(self) -> int | None:
        """The offset as reports carry it: held within what the protocol takes (a clock
        that is years off, say one that booted at 1970, reports the largest offset)."""
        offset = self.offset_ms()
        if offset is None:
            return None
        return max(-MAX_CLOCK_OFFSET_MS, min(MAX_CLOCK_OFFSET_MS, offset))

    def beyond_tolerance(self) -> bool:
        offset = self.offset_ms()
        return offset is not None and abs(offset) > self.tolerance_ms

    def correction(self) -> timedelta:
        """What to add to the device's clock to read the controller's time."""
        offset = self.offset_ms()
        if offset is None or abs(offset) <= self.tolerance_ms:
            return timedelta(0)
        return timedelta(milliseconds=offset)
