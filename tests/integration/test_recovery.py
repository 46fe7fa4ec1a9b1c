"""What happens when things go away: the controller, the broker's memory, a device's."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from devices.simulator import Fleet, FleetSpec
from tests.integration.conftest import wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_step_applied_while_the_controller_was_down_is_confirmed(rig_factory):
    """The acks went to nobody; the device's retained state report still proves it."""
    rig = rig_factory(3)
    rig.start_controller()
    opens = whole_second(4)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    fleet = rig.start_fleet()
    assert wait_until(lambda: all(a.plan_version >= 1 for a in fleet.agents.values()), 5)
    rig.controller.stop()

    assert wait_until(lambda: all(f.current.on for f in fleet.fixtures.values()), timeout=8)
    time.sleep(0.5)
    rig.start_controller()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=5)
    rows = rig.controller.store.latest_commands()
    assert {row.state for row in rows.values()} == {"applied"}
    for device in rig.controller.store.devices():
        # the step that opened the window, applied on time by the device's own clock
        assert device.applied_step_at == opens
        assert abs((device.applied_at - opens).total_seconds()) < 1


def test_broker_and_devices_that_forgot_everything_get_their_plans_again(rig_factory):
    """The embedded broker keeps retained plans in memory only, and a rebooted device
    keeps none: on reconnect the controller publishes every newest plan again."""
    rig = rig_factory(3, embedded=True)
    rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    rig.start_fleet()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=8)
    versions = {d: r.version for d, r in rig.controller.store.latest_commands().items()}

    rig.fleet.stop()  # every device reboots...
    rig.controller.stop()  # ...and the controller restarts with a new embedded broker
    controller = rig.start_controller()
    rebooted = Fleet(
        FleetSpec(devices=rig.devices), controller.broker_address(), topics=rig.settings.topics
    )
    rig.fleet = rebooted
    rebooted.start()
    assert wait_until(lambda: all(f.current.on for f in rebooted.fixtures.values()), timeout=8)
    assert {d: a.plan_version for d, a in rebooted.agents.items()} == versions  # same versions
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=5)
