"""Confirmation by a light sensor, end to end: a real Mosquitto, real agents with the
simulated sensor, a real controller, and the public JSON and the staff history read
over real HTTP. One sensor sees the campaign colour; the other sees red."""

from __future__ import annotations

import io
from contextlib import ExitStack, redirect_stdout
from datetime import UTC, datetime, timedelta

import pytest

from controller.cli import main
from controller.lifecycle import CommandState
from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.sensor import SimulatedSensor
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_sensor_that_sees_the_colour_confirms_and_one_that_does_not_keeps_it_unconfirmed(
    rig_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(2)
    controller = rig.start_controller()
    opens = whole_second(2)
    at_opening = opens.isoformat().replace("+00:00", "Z")
    rig.register(window_campaign(opens, opens + timedelta(seconds=120)))
    # two agents as `illuminate agent --sensor sim [--sensor-wrong-colour #FF0000]` runs them
    broker = controller.broker_address()
    address = BrokerAddress(broker.host, broker.port, broker.tls)
    agents = {
        d.id: Agent(
            d.id,
            address,
            password=d.password,
            topics=rig.settings.topics,
            sensor=SimulatedSensor(wrong_colour=wrong),
        )
        for d, wrong in zip(rig.devices, (None, "#FF0000"), strict=True)
    }
    for agent in agents.values():
        agent.start()
    token = controller.users.add("ada", "admin", [], datetime.now(UTC))
    headers = {"Authorization": f"Bearer {token}"}

    with ExitStack() as stack:
        for agent in agents.values():
            stack.callback(agent.stop)
        http = stack.enter_context(serve(controller.web))

        def public() -> dict[str, dict[str, object]]:
            answer = http.get("/api/v1/public/status")
            assert answer.status_code == 200, answer.text
            return {s["id"]: s for s in answer.json()["sites"]}

        def settled() -> bool:
            sites = public()
            states = tuple(sites.get(s, {}).get("state") for s in ("site-01", "site-02"))
            return states == (
                "lit",
                "unconfirmed",
            )

        assert wait_until(settled, timeout=DEADLINE, step=0.2), public()
        sites = public()
        assert sites["site-01"]["confirmed_by"] == "sensor"
        assert sites["site-01"]["color"] == "#009EDB"
        assert sites["site-02"].get("confirmed_by") is None  # not lit: no strength
        assert "color" not in sites["site-02"]  # only lit is drawn in the colour
        # both fixtures did switch: only the sensor tells them apart
        assert all(agent.device.fixture.current.on for agent in agents.values())

        command = controller.stores.outbox.latest()["dev-02"]
        assert command.state is CommandState.UNCONFIRMED
        assert command.reason is not None and "#FF0000" in command.reason

        # staff see the reason and the raw figures in the device's history
        history = http.get("/api/v1/devices/dev-02/history", headers=headers)
        assert history.status_code == 200, history.text
        mismatches = [e for e in history.json()["events"] if e["kind"] == "mismatch"]
        assert mismatches, history.json()["events"]
        mismatch = mismatches[0]  # (a retry, a minute on, would add one per version)
        assert mismatch["reading"]["color"] == "#FF0000"
        assert mismatch["reading"]["sensor"] == "sim"
        assert mismatch["reading"]["level"] == pytest.approx(80 * 0xDB / 255, abs=0.01)
        assert "#009EDB" in mismatch["reason"] and "#FF0000" in mismatch["reason"]
        assert mismatch["step_at"] == at_opening
        steps = [e for e in history.json()["events"] if e["kind"] == "step"]
        assert at_opening not in {e["step_at"] for e in steps}  # never recorded as lit

        # and in its health: the command's reason, and the mismatch with its figures
        health = http.get("/api/v1/devices/dev-02/health", headers=headers).json()
        assert health["plan"]["state"] == "unconfirmed" and "#FF0000" in health["plan"]["reason"]
        assert health["mismatch"]["step_at"] == at_opening
        assert health["mismatch"]["detail"]["reading"]["color"] == "#FF0000"
        assert health["mismatch"]["detail"]["target"]["color"] == "#009EDB"

        # the technician's command line says it too
        monkeypatch.setenv("ILLUMINATE_TOKEN", token)
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["devices", "health", "dev-02", "--url", str(http.base_url)]) == 0
        (line,) = [x for x in out.getvalue().splitlines() if x.startswith("mismatch ")]
        assert f"step {at_opening}" in line and "saw #FF0000" in line

        good = http.get("/api/v1/devices/dev-01/history", headers=headers).json()
        (step,) = [e for e in good["events"] if e["kind"] == "step" and e["step_at"] == at_opening]
        assert step["confirmed_by"] == "sensor"
        assert step["reading"]["color"] == "#00B8FF"  # the chroma of #009EDB
        health = http.get("/api/v1/devices/dev-01/health", headers=headers).json()
        assert health["applied"]["confirmed_by"] == "sensor" and health["mismatch"] is None
