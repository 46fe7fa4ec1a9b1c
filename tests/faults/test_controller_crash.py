"""Scenario 2: the controller is SIGKILLed mid fan-out and restarted.

Some plans of the new version were published, some were still in the outbox, some
PUBACKs never came back. The restarted controller sends what was not confirmed again,
with the same version: no device applies anything twice, none gets a version more.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.faults.harness import BLUE, RED, Window, count, rig, wait_until, whole_second


def test_controller_killed_mid_fan_out(tmp_path: Path) -> None:
    with rig(tmp_path, count(200)) as r:
        opens = whole_second(1)
        window = [Window(opens, opens + timedelta(minutes=30))]
        r.start(window, BLUE)
        r.verify(1)
        assert r.observer is not None and r.controller is not None
        victim = r.controller
        armed: list[str] = []

        def strike(device: str, version: int, stage: str) -> None:
            if version == 2 and stage == "armed":
                armed.append(device)
                if len(armed) == 1:
                    victim.kill()

        r.observer.on_ack.append(strike)
        r.put_campaign(window, RED)
        wait_until("the controller is killed at the first armed ack", lambda: bool(armed))
        victim.wait(timeout=30)
        r.observer.on_ack.clear()
        r.controller = None
        r.start_controller()
        r.verify(2)
