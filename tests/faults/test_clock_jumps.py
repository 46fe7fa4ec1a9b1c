"""Scenario 7: the controller's wall clock jumps +1 h, back, then -1 h, under libfaketime
(the controller's process only; its monotonic clock runs on untouched).

The devices keep true time. The controller holds its clock steady through each step:
it neither replans the unchanged window, nor stops reconciling, nor reconciles in a
loop (APScheduler, on the stepped clock, would otherwise find every wake-up overdue),
and the page keeps showing the monuments lit.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from tests.faults.harness import BLUE, Rig, Window, count, rig, wait_until, whole_second

FAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))),
    Path("/usr/lib/faketime/libfaketimeMT.so.1"),
)
RUNS = "illuminate_reconcile_runs_total"
STEPS = "illuminate_clock_steps_total"
WATCH_S = 3.0


def _calm(r: Rig) -> None:
    """Reconciles go on at the safety tick's pace (1 s), plus a few wake-ups: not in a loop."""
    before, start = r.metric(RUNS), time.monotonic()
    wait_until("three reconciles", lambda: r.metric(RUNS) >= before + 3)
    time.sleep(WATCH_S)  # a span to count reconciles over, not a wait for anything
    runs, spent = r.metric(RUNS) - before, time.monotonic() - start
    assert runs <= 2 * spent + 5, f"{runs:.0f} reconciles in {spent:.1f} s: a loop"


def test_the_controller_clock_jumps_an_hour_each_way(tmp_path: Path) -> None:
    assert FAKETIME.exists(), (
        "scenario 7 needs libfaketime: install the Debian package 'libfaketime' "
        "(make test does this when it may)"
    )
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    with rig(tmp_path, count(200)) as r:
        r.controller_env = {
            "LD_PRELOAD": str(FAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        opens = whole_second(1)
        r.start([Window(opens, opens + timedelta(minutes=30))], BLUE)
        r.verify(1)
        assert r.metric(STEPS) == 0

        offset.write_text("+1h\n")
        wait_until("the controller saw the step forward", lambda: r.metric(STEPS) == 1)
        _calm(r)
        r.verify(1)

        offset.write_text("+0\n")  # back to true time: the steady clock never left it
        _calm(r)
        r.verify(1)

        offset.write_text("-1h\n")
        wait_until("the controller saw the step back", lambda: r.metric(STEPS) == 2)
        _calm(r)
        r.verify(1)
        assert r.metric(STEPS) == 2
