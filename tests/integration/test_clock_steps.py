"""A real controller process whose system clock is stepped by ±1 h mid-window.

The devices keep true time by their own clocks; the controller must neither replan the
unchanged window, nor stop reconciling, nor show the lit monuments as anything else.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.conftest import count_commands, wait_until, whole_second, window_campaign
from tests.support.clocks import SteppableClock

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEADLINE = 60


@pytest.mark.parametrize("step", [timedelta(hours=1), timedelta(hours=-1)], ids=["+1h", "-1h"])
def test_a_stepped_system_clock_changes_nothing(rig_factory, step: timedelta) -> None:
    rig = rig_factory(3)
    system = SteppableClock()
    controller = rig.start_controller(clock=system)
    opens = whole_second(3)
    rig.register(window_campaign(opens, opens + timedelta(minutes=10)))
    rig.start_fleet()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    assert wait_until(lambda: set(rig.served().values()) == {"lit"}, timeout=DEADLINE)
    versions = count_commands(controller.stores)
    fired = controller.timer.fired

    system.step(step)
    # the safety tick (1 s in these tests) keeps running: three reconciles after the step
    assert wait_until(lambda: controller.timer.fired >= fired + 3, timeout=DEADLINE)
    assert count_commands(controller.stores) == versions
    assert set(rig.states().values()) == {"lit"}
    assert set(rig.served().values()) == {"lit"}, rig.served()
    latest = controller.stores.outbox.latest()
    assert {c.state.value for c in latest.values()} == {"applied"}
    steps = controller.metrics.registry.get_sample_value("illuminate_clock_steps_total")
    assert steps == 1
    assert abs((controller.clock() - system()).total_seconds()) >= 3599
