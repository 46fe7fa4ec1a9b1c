"""Scenario 1: the broker is SIGKILLed mid fan-out and restarted 5 s later.

With persistence, the broker comes back with what its last autosave held: the plans
retained before the fan-out, older than the database's. Without it, it comes back with
nothing at all. Either way every device ends on the newest plan, applied once.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faults.harness import BLUE, RED, Window, count, rig, wait_until, whole_second

DOWN_S = 5.0


@pytest.mark.parametrize("persistence", [True, False], ids=["persistence", "no-persistence"])
def test_broker_killed_mid_fan_out(tmp_path: Path, persistence: bool) -> None:
    with rig(tmp_path, count(200), persistence=persistence) as r:
        opens = whole_second(1)
        window = [Window(opens, opens + timedelta(minutes=30))]
        r.start(window, BLUE)
        r.wait_acked("applied", 1)
        r.verify(1)
        if persistence:
            # the autosave now holds version 1 of every plan; version 2 comes after it
            r.broker.wait_autosave(time.time_ns())
        assert r.observer is not None
        armed: list[str] = []

        def strike(device: str, version: int, stage: str) -> None:
            if version == 2 and stage == "armed":
                armed.append(device)
                if len(armed) == 1:
                    r.kill_broker()

        r.observer.on_ack.append(strike)
        r.put_campaign(window, RED)
        wait_until("the broker is killed at the first armed ack", lambda: r.broker.proc is None)
        assert len(r.observer.devices_with("armed", 2)) < len(r.ids), "not mid fan-out"
        time.sleep(DOWN_S)  # the outage itself, not a wait for anything
        r.observer.on_ack.clear()
        r.restart_broker()
        if not persistence:
            r.wait_online()  # with it, the statuses it restored may be stale
        r.verify(2)
