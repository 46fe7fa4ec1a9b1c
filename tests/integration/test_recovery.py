"""What happens when things go away: the controller, the broker's memory, a device's."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from devices.simulator import Fleet, FleetSpec
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_step_applied_while_the_controller_was_down_is_confirmed(rig_factory):
    """The acks went to nobody; the device's retained state report still proves it."""
    rig = rig_factory(3)
    rig.start_controller()
    opens = whole_second(4)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    fleet = rig.start_fleet()
    assert wait_until(
        lambda: all(a.plan_version >= 1 for a in fleet.agents.values()), timeout=DEADLINE
    )
    rig.controller.stop()

    assert wait_until(lambda: all(f.current.on for f in fleet.fixtures.values()), timeout=DEADLINE)
    time.sleep(0.5)
    rig.start_controller()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    rows = rig.controller.stores.outbox.latest()
    assert {row.state for row in rows.values()} == {"applied"}
    for device in rig.controller.stores.reports.views().values():
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
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    versions = {d: r.version for d, r in rig.controller.stores.outbox.latest().items()}

    rig.fleet.stop()  # every device reboots...
    rig.controller.stop()  # ...and the controller restarts with a new embedded broker
    controller = rig.start_controller()
    rebooted = Fleet(
        FleetSpec(devices=rig.devices), controller.broker_address(), topics=rig.settings.topics
    )
    rig.fleet = rebooted
    rebooted.start()
    assert wait_until(
        lambda: all(f.current.on for f in rebooted.fixtures.values()), timeout=DEADLINE
    )
    assert {d: a.plan_version for d, a in rebooted.agents.items()} == versions  # same versions
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)


def test_a_restored_database_plans_above_the_versions_devices_hold(
    rig_factory, tmp_path, mosquitto
):
    """Devices drop versions at or below the one they have; after the controller lost its
    database, their state reports tell it how far it must count to be heard again."""
    from datetime import UTC, datetime

    from tests.integration.conftest import make_settings

    rig = rig_factory(2)
    rig.start_controller()
    opens = whole_second(2)
    blue = window_campaign(opens, opens + timedelta(seconds=60))
    rig.register(blue)
    fleet = rig.start_fleet()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    for color in ("#FF0000", "#00FF00"):
        rig.controller.stores.campaigns.put(
            blue.model_copy(update={"color": color}), datetime.now(UTC)
        )
        rig.controller.reconcile_now()
    assert wait_until(
        lambda: all(f.current.color == "#00FF00" for f in fleet.fixtures.values()), timeout=DEADLINE
    )
    held = {d: a.plan_version for d, a in fleet.agents.items()}
    assert min(held.values()) >= 3

    rig.controller.stop()
    rig.settings = make_settings(tmp_path / "restored", mosquitto.url)  # an empty database
    rig.start_controller()
    rig.register(blue)
    assert wait_until(
        lambda: all(f.current.color == "#009EDB" for f in fleet.fixtures.values()), timeout=DEADLINE
    )
    assert {d: a.plan_version for d, a in fleet.agents.items()} == {
        d: v + 1 for d, v in held.items()
    }
    ok = wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    assert ok, (
        rig.states(),
        rig.controller.stores.reports.views().values(),
        rig.controller.stores.outbox.latest(),
    )
