"""Which devices report a clock off by more than the tolerance: flagged to staff.

The intake hands every `clock_offset_ms` a device reports (state reports and acks) to
`ClockWatch.seen`. A device whose offset goes beyond `control.clock_tolerance_ms` is
flagged: a warning in the log naming it and its offset, one count in the counter
`illuminate_devices_clock_off_total`, and it is listed by `off()` while it stays so.
Coming back within the tolerance is logged too. Such a device still switches on time:
it applies by the controller's time (see `devices/clocksync.py`); the flag says its own
clock source (NTP) needs a technician.
"""

from __future__ import annotations

import logging
import threading

from controller.metrics import Metrics

log = logging.getLogger(__name__)


class ClockWatch:
    def __init__(self, tolerance_ms: int, metrics: Metrics) -> None:
        self.tolerance_ms = tolerance_ms
        self.metrics = metrics
        self._lock = threading.Lock()
        self._off: dict[str, int] = {}

    def seen(self, device_id: str, offset_ms: int) -> None:
        beyond = abs(offset_ms) > self.tolerance_ms
        with self._lock:
            was = device_id in self._off
            if beyond:
                self._off[device_id] = offset_ms
            else:
                self._off.pop(device_id, None)
        if beyond and not was:
            self.metrics.devices_clock_off.inc()
            log.warning(
                "device %s: its clock is off by %+d ms (tolerance %d ms); it applies by "
                "the controller's time until its own clock is fixed",
                device_id,
                offset_ms,
                self.tolerance_ms,
            )
        elif was and not beyond:
            log.info("device %s: its clock is within the tolerance again", device_id)

    def off(self) -> dict[str, int]:
        """The devices flagged now, with the offset each last reported."""
        with self._lock:
            return dict(self._off)
