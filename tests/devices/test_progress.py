"""Progress lines and connection summaries, on a FakeClock."""

from __future__ import annotations

from datetime import UTC, datetime

from devices.clock import FakeClock
from devices.host import ConnectionSummary
from devices.progress import Progress


def summary(online: int, total: int = 10, **phases: int) -> ConnectionSummary:
    return ConnectionSummary(total=total, online=online, phases=dict(phases))


def test_summary_line_says_why_devices_are_missing() -> None:
    s = ConnectionSummary(
        total=100,
        online=90,
        phases={"waiting to retry": 6, "not yet tried": 3, "connecting": 1},
        reasons={"connack refused: Not authorized": 4, "socket error: Connection refused": 2},
    )
    assert s.missing == 10
    assert s.line() == (
        "connected 90/100; missing: 6 waiting to retry (4 connack refused: Not authorized;"
        " 2 socket error: Connection refused), 3 not yet tried, 1 connecting"
    )
    assert ConnectionSummary(total=3, online=3).line() == "connected 3/3"


def test_summaries_of_shards_merge() -> None:
    a = ConnectionSummary(5, 4, {"waiting to retry": 1}, {"x": 1})
    b = ConnectionSummary(5, 3, {"waiting to retry": 2}, {"x": 1, "y": 1})
    merged = ConnectionSummary.merge([a, b])
    assert (merged.total, merged.online) == (10, 7)
    assert merged.phases == {"waiting to retry": 3}
    assert merged.reasons == {"x": 2, "y": 1}


def test_progress_repeats_every_interval_while_devices_are_missing() -> None:
    clock = FakeClock(datetime(2025, 1, 1, tzinfo=UTC))
    progress = Progress(every=2.0, monotonic=clock.monotonic)
    assert progress.update(summary(0, **{"not yet tried": 10})) is not None
    clock.advance(1.0)
    assert progress.update(summary(4, **{"not yet tried": 6})) is None
    clock.advance(1.0)
    line = progress.update(summary(4, **{"not yet tried": 6}))  # unchanged, still printed
    assert line == "connected 4/10; missing: 6 not yet tried"


def test_progress_says_when_all_are_connected_then_only_on_change() -> None:
    clock = FakeClock(datetime(2025, 1, 1, tzinfo=UTC))
    progress = Progress(every=2.0, monotonic=clock.monotonic)
    progress.update(summary(9, connecting=1))
    clock.advance(0.1)
    assert progress.update(summary(10)) == "connected 10/10 (all connected)"  # at once
    for _ in range(5):
        clock.advance(5.0)
        assert progress.update(summary(10)) is None
    line = progress.update(summary(9, **{"waiting to retry": 1}))
    assert line is not None and line.startswith("connected 9/10")
