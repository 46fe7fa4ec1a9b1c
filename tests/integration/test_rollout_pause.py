"""A staged rollout against a real Mosquitto and simulated devices: a change made during
the window goes to the canaries first; one canary rejects it, the rollout pauses by
itself, and the other devices keep the plan they have. An abort puts the campaign back,
and the canary that took the change gets the old look again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.campaigns import apply_campaign
from controller.rollout import RolloutState
from controller.rollouts import abort
from schedules.model import Campaign, SiteCatalog
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign

pytestmark = pytest.mark.broker

SITES = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {
                "id": f"site-{i:02d}",
                "city": "brussels" if i <= 3 else "ypres",
                "name": {"en": f"Monument {i}"},
                "lat": 50.8 + i / 1000,
                "lon": 4.35,
            }
            for i in range(1, 7)
        ],
    }
)
ROLLOUT = {
    "canary_sites": ["site-01", "site-02"],
    "maximum_per_minute": 10,
    "wave_interval": "12h",  # the cities wait: only the canaries can be sent in this test
    "pause": {"threshold_percentage": 20, "min_results": 2},
}
BLUE = "#009EDB"
RED = "#C8102E"


def with_rollout(campaign: Campaign, color: str) -> Campaign:
    body = campaign.model_dump(mode="json")
    return Campaign.model_validate({**body, "color": color, "rollout": ROLLOUT})


def test_a_rejecting_canary_pauses_the_rollout_and_abort_restores(rig_factory) -> None:
    rig = rig_factory(6, {2: {"behaviour": {"ack": "reject"}}})
    rig.sites = SITES
    controller = rig.start_controller()
    opens = whole_second(1)
    blue = with_rollout(window_campaign(opens, opens + timedelta(minutes=30)), BLUE)
    rig.register(blue)
    fleet = rig.start_fleet()
    normal = [f"dev-{i:02d}" for i in (1, 3, 4, 5, 6)]
    assert wait_until(
        lambda: all(fleet.fixtures[d].current.color == BLUE for d in normal), timeout=DEADLINE
    )
    before = {d: fleet.agents[d].plan_version for d in normal}

    stores = controller.stores
    assert stores.rollouts is not None
    apply_campaign(stores, with_rollout(blue, RED), datetime.now(UTC))
    controller.changed()
    (rollout,) = stores.rollouts.recent()

    def paused() -> bool:
        found = stores.rollouts.get(rollout.id) if stores.rollouts else None
        return found is not None and found.state is RolloutState.PAUSED

    assert wait_until(paused, timeout=DEADLINE)
    found = stores.rollouts.get(rollout.id)
    assert found is not None
    assert found.reason == "1 of 2 results failed or were rejected (50.0 %, over 20 %)"
    # the canary that took it shows the new colour; the rest keep their plan
    assert wait_until(lambda: fleet.fixtures["dev-01"].current.color == RED, timeout=DEADLINE)
    for device in normal[1:]:
        assert fleet.agents[device].plan_version == before[device]
        assert fleet.fixtures[device].current.color == BLUE
    latest = stores.outbox.latest()
    assert latest["dev-02"].state.value == "rejected"
    assert {d: latest[d].version for d in normal[1:]} == {d: before[d] for d in normal[1:]}

    aborted, restored = abort(stores, rollout.id, datetime.now(UTC))
    assert aborted.state is RolloutState.ABORTED and restored
    controller.changed()
    agent = fleet.agents["dev-01"]
    assert agent.wait_for(lambda: agent.plan_version == before["dev-01"] + 2, timeout=DEADLINE)
    assert wait_until(lambda: fleet.fixtures["dev-01"].current.color == BLUE, timeout=DEADLINE)
    for device in normal[1:]:
        assert fleet.agents[device].plan_version == before[device]
