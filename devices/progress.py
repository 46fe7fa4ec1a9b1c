"""Progress lines of a running fleet: never silent while devices are missing.

While some devices are not online, a line comes every `every` seconds, each saying how
many are connected and why the others are not. When all are online, one line says so;
after that the fleet is quiet until a device goes missing again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from devices.host import ConnectionSummary


class Progress:
    def __init__(self, every: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if every <= 0:
            raise ValueError("the progress interval must be above 0")
        self.every = every
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._last_line: str | None = None

    def update(self, summary: ConnectionSummary) -> str | None:
        """The line to print now, or None."""
        now = self._monotonic()
        line = summary.line()
        if summary.missing == 0:
            emit = line != self._last_line
        else:
            emit = self._last_at is None or now - self._last_at >= self.every
        if not emit:
            return None
        self._last_at = now
        self._last_line = line
        return f"{line} (all connected)" if summary.missing == 0 else line
