"""The record of what was lit, end to end: a real Mosquitto, real agents, a real
controller stopped across a whole window, and the staff route read over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, Rig, wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]

LENGTH = timedelta(seconds=3)


def plans_hold(rig: Rig, opens: datetime) -> bool:
    """Every agent holds the controller's newest plan, and that plan opens at `opens`."""
    assert rig.controller is not None and rig.fleet is not None
    latest = rig.controller.stores.outbox.latest()
    return len(latest) == len(rig.devices) and all(
        rig.fleet.agents[d].plan_version == c.version
        and any(s.at == opens and s.state.on for s in c.plan.steps)
        for d, c in latest.items()
    )


def test_a_window_the_controller_slept_through_is_confirmed_late_or_missed(rig_factory) -> None:
    # dev-01 runs the agent as it comes; dev-02 applies its steps but never says so
    rig = rig_factory(2, behaviours={2: {"behaviour": {"ack": "never"}}})
    controller = rig.start_controller()
    fleet = None
    opens = closes = None
    for delay in (8, 20, 60):  # a slow machine gets a later window, never a failure
        opens = whole_second(delay)
        closes = opens + LENGTH
        if fleet is None:
            rig.register(window_campaign(opens, closes))
            fleet = rig.start_fleet()
        else:
            controller.stores.campaigns.put(window_campaign(opens, closes), datetime.now(UTC))
            controller.changed()
        assert wait_until(lambda o=opens: plans_hold(rig, o), timeout=DEADLINE)
        assert wait_until(
            lambda: set(controller.history.first_heard()) == {"dev-01", "dev-02"},
            timeout=DEADLINE,
        )
        if datetime.now(UTC) < opens - timedelta(seconds=1):
            break
    else:
        pytest.fail("could not get the plans out ahead of a window")
    assert opens is not None and closes is not None and fleet is not None
    controller.stop()

    # the whole window passes with the controller away; both fixtures light on their own
    lit = {"dev-01": False, "dev-02": False}

    def watch() -> bool:
        for device_id, fixture in fleet.fixtures.items():
            lit[device_id] = lit[device_id] or fixture.current.on
        return datetime.now(UTC) > closes + timedelta(seconds=0.5)

    assert wait_until(watch, timeout=DEADLINE + LENGTH.total_seconds(), step=0.05)
    assert lit == {"dev-01": True, "dev-02": True}
    assert all(not f.current.on for f in fleet.fixtures.values())

    controller = rig.start_controller()
    token = controller.users.add("ada", "admin", [], datetime.now(UTC))
    headers = {"Authorization": f"Bearer {token}"}
    with serve(controller.web) as http:

        def outcomes() -> dict[str, list[str]]:
            controller.recorder.settle()
            found = {}
            for device_id in ("dev-01", "dev-02"):
                answer = http.get(f"/api/v1/devices/{device_id}/history", headers=headers)
                assert answer.status_code == 200, answer.text
                found[device_id] = [w["outcome"] for w in answer.json()["windows"]]
            return found

        expected = {"dev-01": ["confirmed_late"], "dev-02": ["missed"]}
        assert wait_until(lambda: outcomes() == expected, timeout=DEADLINE, step=0.5), outcomes()

        history = http.get("/api/v1/devices/dev-01/history", headers=headers).json()
        (window,) = history["windows"]
        assert window["start"] == opens.isoformat().replace("+00:00", "Z")
        # the device's own time of lighting it: on time, by its clock
        applied = datetime.fromisoformat(window["confirmed_at"])
        assert abs((applied - opens).total_seconds()) < 1
        assert datetime.fromisoformat(window["reported_at"]) > closes
        steps = {e["step_at"] for e in history["events"] if e["kind"] == "step"}
        assert {window["start"], window["end"]} <= steps  # its start and its end
        (down,) = [
            d
            for d in history["controller_down"]
            if datetime.fromisoformat(d["start"]) <= opens <= datetime.fromisoformat(d["end"])
        ]
        assert datetime.fromisoformat(down["end"]) >= closes

        outcome = http.get("/api/v1/campaigns/blue-heart/outcome", headers=headers).json()
        assert {s["site"]: s["outcome"] for s in outcome["sites"]} == {
            "site-01": "confirmed_late",
            "site-02": "missed",
        }
