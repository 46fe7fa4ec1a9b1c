"""Time as an input: code takes a `Clock`, tests pass their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current instant, time-zone aware, in UTC."""


def system_clock() -> datetime:
    return datetime.now(UTC)
