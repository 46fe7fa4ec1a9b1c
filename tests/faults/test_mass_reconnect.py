"""Scenario 5: 1,000 devices reconnect at once after a broker restart.

The broker is killed and comes back 5 s later with nothing (no persistence). Every
device retries with a jittered exponential backoff, so they come back spread out rather
than in one instant; each gets its plan again and ends in the desired state, with no
new version and nothing applied twice.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from tests.faults.harness import BLUE, Window, count, rig, whole_second

DOWN_S = 5.0


def test_a_thousand_devices_reconnect_after_a_broker_restart(tmp_path: Path) -> None:
    with rig(tmp_path, count(1000, floor=100)) as r:
        opens = whole_second(1)
        r.start([Window(opens, opens + timedelta(minutes=30))], BLUE)
        r.verify(1)
        assert r.observer is not None
        births = {d: len(b) for d, b in r.observer.births.items()}
        r.broker.kill()
        killed = time.monotonic()
        time.sleep(DOWN_S)  # the outage itself
        r.broker.start(write_passwords=False)
        r.wait_online()
        r.verify(1)
        back = []
        for device in r.ids:
            later = r.observer.births[device][births.get(device, 0) :]
            assert later, f"{device} never said it was back"
            back.append(later[0] - killed)
        back.sort()
        # a device that failed k times waits about 2**(k-1) s, times a random factor in
        # [0.5, 1]: after 5 s down their returns spread over seconds, not one instant
        assert back[0] >= DOWN_S - 0.5
        assert back[-1] - back[0] >= 1.0, (back[0], back[-1])
