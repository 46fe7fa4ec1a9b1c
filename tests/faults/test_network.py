"""Scenario 4: a TCP proxy between the devices and the broker (tests/support/proxy.py)
adds 2 s of latency, cuts each direction for 3x the keepalive, and resets connections.

Each fault comes with a change of campaign, so a new plan must cross the broken link;
each time every device ends on it, applied once.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from tests.faults.harness import (
    AMBER,
    BLUE,
    GREEN,
    RED,
    Window,
    count,
    rig,
    seconds,
    wait_until,
    whole_second,
)
from tests.support.proxy import CuttableLink

LATENCY_S = 2.0


def test_latency_one_way_cuts_and_resets(tmp_path: Path) -> None:
    # above the 4 s a ping takes there and back under the latency, or no link would live
    keepalive = round(seconds(10, 5))
    cut_s = 3 * keepalive
    with rig(tmp_path, count(200), keepalive_s=keepalive) as r:
        r.start_broker()
        with CuttableLink(r.broker.port) as link:
            r.device_port = link.port
            opens = whole_second(1)
            window = [Window(opens, opens + timedelta(minutes=30))]
            r.setup(window, BLUE)
            r.start_controller(wait=False)
            for shard in r.shards:
                r.start_shard(shard)
            r.wait_healthy()
            r.wait_online()
            r.verify(1)

            link.latency_s = LATENCY_S  # every byte each way is 2 s late
            r.put_campaign(window, RED)
            r.verify(2)
            link.latency_s = 0.0

            link.blackhole("up")  # the devices hear the broker; it does not hear them
            r.put_campaign(window, GREEN)
            time.sleep(cut_s)  # the partition itself, not a wait for anything
            link.blackhole(None)
            r.verify(3)

            link.blackhole("down")  # the broker hears the devices; they do not hear it
            r.put_campaign(window, AMBER)
            time.sleep(cut_s)
            link.blackhole(None)
            r.verify(4)

            accepted = link.accepted
            link.reset()  # every connection ends with a RST, both sides
            wait_until(
                "every device connected again after the reset",
                lambda: link.accepted >= accepted + len(r.ids),
            )
            r.put_campaign(window, BLUE)
            r.verify(5)
            assert link.dropped_bytes > 0
