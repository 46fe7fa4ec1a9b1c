"""A system clock whose wall reading a test can step, as an administrator or a faulty
time source would, while its monotonic reading runs on untouched."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SteppableClock:
    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic()

    def step(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta
