"""Test flashes and device health, for real: controller, Mosquitto, simulated agents, HTTP.

A technician flashes a device during a live window: the answer is `applied` with the
round trip, the public status never shows the test, the device ends back on its real
plan (a version above the test's), a second test at once is refused with 429 and
Retry-After, and a silent device's test answers `timeout`.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from controller.cli import main
from controller.lifecycle import CommandState
from controller.store.base import Command
from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from devices.protocol import LightState
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, Rig, wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MAGENTA = "#FF00FF"
FLASH = LightState(on=True, color=MAGENTA, level=100)


def _latest(rig: Rig, device_id: str) -> Command:
    assert rig.controller is not None
    return rig.controller.stores.outbox.latest([device_id])[device_id]


def _live_rig(rig_factory, n: int, behaviours=None) -> tuple[Rig, str]:
    rig = rig_factory(n, behaviours=behaviours)
    controller = rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=300)))
    rig.start_fleet()
    token = controller.users.add("tom", "technician", ["brussels"], datetime.now(UTC))
    return rig, token


def _from(real: Command, latest: Command) -> list:
    """The real plan's steps from the first step of `latest` on."""
    return [s for s in real.plan.steps if s.at >= latest.plan.steps[0].at]


class PublicWatch:
    """Reads the served public status over and over, in the background."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.documents: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self.rig.controller is not None
        while not self._stop.is_set():
            rendering = self.rig.controller.public.get("en")
            if rendering is not None and (
                not self.documents or self.documents[-1] != rendering.body
            ):
                self.documents.append(rendering.body)
            time.sleep(0.01)

    def __enter__(self) -> PublicWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_a_test_flash_reaches_applied_never_shows_and_is_rate_limited(rig_factory) -> None:
    rig, token = _live_rig(rig_factory, 2)
    assert rig.controller is not None and rig.fleet is not None
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    assert wait_until(lambda: rig.served().get("site-01") == "lit", timeout=DEADLINE)
    real = _latest(rig, "dev-01")
    auth = {"Authorization": f"Bearer {token}"}

    with serve(rig.controller.web) as http, PublicWatch(rig) as watch:
        answer = http.post(
            "/api/v1/devices/dev-01/test",
            json={"seconds": 3, "color": MAGENTA},
            headers=auth,
            timeout=DEADLINE,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["result"] == "applied"
        assert body["stage"] == "applied"
        assert body["version"] == real.version + 1
        assert 0 < body["round_trip_ms"] <= 3000
        test = _latest(rig, "dev-01")
        if test.version == body["version"]:  # (unless this machine took the whole 3 s)
            assert test.plan.test
            # the device confirmed the flash; the public status is still not lit
            assert rig.states()["site-01"] == "pending"
        fixture = rig.fleet.fixtures["dev-01"]
        assert any(state.color == MAGENTA and state.on for _, state in fixture.history)

        # at once again: refused, with when to try
        again = http.post("/api/v1/devices/dev-01/test", json={"seconds": 3}, headers=auth)
        assert again.status_code == 429
        assert int(again.headers["retry-after"]) >= 1
        assert "dev-01" in again.json()["detail"]

        # the device ends back on its real plan, above the test's version, lit again
        def back() -> bool:
            latest = _latest(rig, "dev-01")
            return (
                latest.version > body["version"]
                and latest.state == CommandState.APPLIED
                and rig.served().get("site-01") == "lit"
            )

        assert wait_until(back, timeout=DEADLINE)
        latest = _latest(rig, "dev-01")
        assert latest.plan.test is False
        assert latest.plan.steps == _from(real, latest)  # the window's own step is back
        assert rig.fleet.agents["dev-01"].plan_version == latest.version
        assert rig.fleet.fixtures["dev-01"].current.color != MAGENTA

        health = http.get("/api/v1/devices/dev-01/health", headers=auth).json()

    # nothing the public page served during all that showed the test
    assert watch.documents
    for document in watch.documents:
        assert MAGENTA.encode() not in document
        site = next(s for s in orjson.loads(document)["sites"] if s["id"] == "site-01")
        assert site["state"] in {"lit", "pending"}
        if site["state"] == "lit":
            assert site["color"] == "#009EDB"
    assert any(
        next(s for s in orjson.loads(d)["sites"] if s["id"] == "site-01")["state"] == "pending"
        for d in watch.documents
    )

    # health: online, seen, firmware, the clock, the plan
    assert health["online"] is True
    assert health["firmware"] == "illuminate-agent/0.1.0"
    assert health["last_seen"] is not None
    assert health["clock"] is not None and abs(health["clock"]["offset_ms"]) < 60_000
    assert health["plan"]["version"] >= latest.version and health["plan"]["test"] is False

    # the audit log has the test (the refused one is not recorded)
    entries = [e.record for e in rig.controller.web.state.staff.audit.entries()]
    tested = [r for r in entries if r.action == "tested"]
    assert [(r.actor, r.subject, r.city) for r in tested] == [("tom", "dev-01", "brussels")]
    assert tested[0].detail is not None and tested[0].detail["result"] == "applied"


def test_a_silent_device_answers_timeout_and_gets_its_plan_back(rig_factory) -> None:
    rig, token = _live_rig(rig_factory, 2, behaviours={2: {"behaviour": {"ack": "never"}}})
    assert rig.controller is not None and rig.fleet is not None
    assert wait_until(lambda: rig.states()["site-01"] == "lit", timeout=DEADLINE)
    assert wait_until(lambda: "dev-02" in rig.controller.stores.outbox.latest(), timeout=DEADLINE)
    assert wait_until(
        lambda: _latest(rig, "dev-02").state != CommandState.PENDING, timeout=DEADLINE
    )
    real = _latest(rig, "dev-02")
    with serve(rig.controller.web) as http:
        started = time.monotonic()
        answer = http.post(
            "/api/v1/devices/dev-02/test",
            json={"seconds": 2},
            headers={"Authorization": f"Bearer {token}"},
            timeout=DEADLINE,
        )
        waited = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    body = answer.json()

    assert body["result"] == "timeout"
    assert body["round_trip_ms"] is None
    assert body["stage"] == "published"  # the broker took it; the device said nothing
    assert waited >= 2.0
    # the silent device applied the flash all the same, and then its real plan again
    assert wait_until(
        lambda: _latest(rig, "dev-02").version == body["version"] + 1, timeout=DEADLINE
    )
    back = _latest(rig, "dev-02")
    assert back.plan.test is False and back.plan.steps == _from(real, back)
    assert wait_until(
        lambda: rig.fleet.agents["dev-02"].plan_version == back.version, timeout=DEADLINE
    )
    assert rig.states()["site-02"] != "lit"


def test_the_cli_runs_a_test_through_the_controller(rig_factory, monkeypatch) -> None:
    rig, token = _live_rig(rig_factory, 1)
    assert rig.controller is not None
    assert wait_until(lambda: rig.states()["site-01"] == "lit", timeout=DEADLINE)
    monkeypatch.setenv("ILLUMINATE_TOKEN", token)
    with serve(rig.controller.web) as http:
        url = str(http.base_url)
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["devices", "test", "dev-01", "--url", url, "--seconds", "3"])
        assert code == 0, out.getvalue()
        assert out.getvalue().startswith("dev-01: applied in ")
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["devices", "health", "dev-01", "--url", url])
        assert code == 0
        assert "online" in out.getvalue() and "illuminate-agent/0.1.0" in out.getvalue()
        # a second test at once is refused: the CLI says so, with the wait
        err = io.StringIO()
        with redirect_stdout(io.StringIO()):
            from contextlib import redirect_stderr

            with redirect_stderr(err):
                code = main(["devices", "test", "dev-01", "--url", url])
        assert code == 2
        assert "429" in err.getvalue() and "Retry-After" in err.getvalue()


def test_a_real_agent_flashes_and_reports_its_clock(rig_factory, mosquitto) -> None:
    rig = rig_factory(1)
    # a beacon a second, and an agent that trusts them after two seconds (instead of
    # 30 s and a minute), so its offset is known within the test
    control = rig.settings.control.model_copy(update={"clock_beacon_s": 1.0})
    rig.settings = rig.settings.model_copy(update={"control": control})
    controller = rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=300)))
    device = rig.devices[0]
    fixture = SimulatedFixture()
    agent = Agent(
        device.id,
        BrokerAddress.parse(mosquitto.url),
        password=device.password,
        fixture=fixture,
        clock_synced=lambda: True,
    )
    agent.device.controller_time.min_span_s = 2.0
    agent.start()
    try:
        assert wait_until(lambda: rig.states()["site-01"] == "lit", timeout=DEADLINE)
        token = controller.users.add("tom", "technician", ["brussels"], datetime.now(UTC))
        auth = {"Authorization": f"Bearer {token}"}
        with serve(controller.web) as http:
            answer = http.post(
                "/api/v1/devices/dev-01/test",
                json={"seconds": 2, "color": MAGENTA},
                headers=auth,
                timeout=DEADLINE,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"] == "applied"
            assert any(state.color == MAGENTA for _, state in fixture.history)
            assert wait_until(
                lambda: agent.plan_version > answer.json()["version"], timeout=DEADLINE
            )
            assert wait_until(lambda: rig.states()["site-01"] == "lit", timeout=DEADLINE)

            def health_now() -> dict[str, Any]:
                body: dict[str, Any] = http.get(
                    "/api/v1/devices/dev-01/health", headers=auth
                ).json()
                return body

            # the agent reports its offset once it trusts the beacons
            assert wait_until(lambda: health_now()["clock"]["source"] == "device", timeout=DEADLINE)
            health = health_now()
        assert health["online"] is True
        assert health["firmware"] == "illuminate-agent/0.1.0"
        assert health["clock"]["synced"] is True
        # the agent reports its offset from the controller's clock beacons
        assert health["clock"]["source"] == "device"
        assert abs(health["clock"]["offset_ms"]) < 60_000
        assert health["clock"]["flagged"] is False
        assert health["plan"]["version"] == agent.plan_version
        assert health["plan"]["state"] == "applied"
        assert health["reported"]["state"]["color"] == "#009EDB"
    finally:
        agent.stop()
    with serve(controller.web) as http:
        # a clean stop: the agent's offline status is what health says now
        assert wait_until(
            lambda: (
                http.get("/api/v1/devices/dev-01/health", headers=auth).json()["online"] is False
            ),
            timeout=DEADLINE,
        )
