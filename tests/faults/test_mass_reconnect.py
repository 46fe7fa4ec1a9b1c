"""Scenario 5: 1,000 devices reconnect at once after a broker restart.

The broker is killed and comes back 5 s later with nothing (no persistence). Every
device retries with a jittered exponential backoff, so they come back spread out rather
than in one instant; each gets its plan again and ends in the desired state, with no
new version and nothing applied twice.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

from tests.faults.harness import BLUE, Window, count, rig, whole_second

DOWN_S = 5.0
CONNECTED = re.compile(r"^(?P<at>\d+): New client connected from \S+ as (?P<id>\S+) ")


def test_a_thousand_devices_reconnect_after_a_broker_restart(tmp_path: Path) -> None:
    with rig(tmp_path, count(1000, floor=100)) as r:
        opens = whole_second(1)
        r.start([Window(opens, opens + timedelta(minutes=30))], BLUE)
        r.verify(1)
        killed = time.time()
        r.kill_broker()
        time.sleep(DOWN_S)  # the outage itself
        r.restart_broker()
        r.wait_online()
        r.verify(1)
        # when each device was back, by the broker's log (whole seconds)
        back: dict[str, int] = {}
        for line in r.broker.log.splitlines():
            found = CONNECTED.match(line)
            if found and int(found["at"]) >= int(killed) and found["id"] in r.site_of:
                back.setdefault(found["id"], int(found["at"]))
        assert set(back) == set(r.ids), sorted(set(r.ids) - set(back))[:5]
        assert min(back.values()) >= int(killed + DOWN_S)
        # a device that failed k times waits about 2**(k-1) s, times a random factor in
        # [0.5, 1]: after 5 s down they come back over seconds, not in one instant
        assert len(set(back.values())) >= 3, sorted(set(back.values()))
