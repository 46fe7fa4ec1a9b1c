"""The test and health routes over real HTTP: bad input is a clear 4xx, rate limits are
a 429 with Retry-After, and a test's outcome and audit entry (on a fake clock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from controller.device_health import HealthTracker
from controller.flash import FlashLimits, FlashTester
from controller.lifecycle import CommandState
from controller.metrics import Metrics
from controller.store.audit import MemoryAuditLog
from controller.store.base import Move, NewDevice, Stores
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.device_ops_api import DeviceOps
from devices.clock import FakeClock
from tests.controller.test_staff_api import CATALOG, NOW, public_view, serve

TEST = "/api/v1/devices/atomium-ctl/test"


class Ticking(FakeClock):
    """A fake clock that moves on by `step` each time its monotonic reading is taken,
    so a waiting test reaches its deadline without real time passing."""

    def __init__(self, step: float) -> None:
        super().__init__(NOW)
        self.step = step

    def monotonic(self) -> float:
        reading = super().monotonic()
        self.advance(self.step)
        return reading


@dataclass
class World:
    http: httpx.Client
    stores: Stores
    audit: MemoryAuditLog
    ops: DeviceOps
    clock: Ticking
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices(
            [NewDevice("atomium-ctl", "atomium"), NewDevice("menin-gate-ctl", "menin-gate")],
            NOW,
        )
        users = Users(sessions)
        clock = Ticking(0.5)
        audit = MemoryAuditLog()
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
            audit=audit,
        )
        ops = DeviceOps(
            FlashTester(
                stores, clock, clock.monotonic, limits=FlashLimits(user_tests=2), poll_s=0.01
            ),
            HealthTracker(),
        )
        app.state.device_ops = ops
        tokens = {
            "admin": users.add("ada", "admin", [], NOW),
            "technician": users.add("tom", "technician", ["brussels"], NOW),
        }
        with serve(app) as http:
            yield World(http, stores, audit, ops, clock, tokens)


def test_bad_input_is_a_clear_4xx(world: World) -> None:
    http, auth = world.http, world.auth("admin")
    for body, where in (
        ({"seconds": "5"}, "seconds"),
        ({"seconds": 0.5}, "seconds"),
        ({"seconds": 31}, "seconds"),
        ({"level": 0}, "level"),
        ({"color": "white"}, "color"),
        ({"colour": "#FFFFFF"}, "colour"),
    ):
        answer = http.post(TEST, json=body, headers=auth)
        assert answer.status_code == 422, body
        assert answer.json()["detail"][0]["path"] == where, answer.text
    assert http.post(TEST, content=b"[1]", headers=auth).status_code == 422
    assert http.post(TEST, content=b"{", headers=auth).status_code == 422
    plain = {**auth, "Content-Type": "text/plain"}
    assert http.post(TEST, content=b"seconds=5", headers=plain).status_code == 415
    for bad in ("Atomium-ctl", "a+b", "%24sys", "x" * 49):
        answer = http.post(f"/api/v1/devices/{bad}/test", headers=auth)
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["path"] == "device_id"
        assert http.get(f"/api/v1/devices/{bad}/health", headers=auth).status_code == 422
    assert http.post("/api/v1/devices/nowhere/test", headers=auth).status_code == 404
    assert http.get("/api/v1/devices/nowhere/health", headers=auth).status_code == 404
    # nothing above made a test plan
    assert world.stores.outbox.latest() == {}


def test_a_test_times_out_on_the_clock_and_is_audited(world: World) -> None:
    served = world
    answer = served.http.post(TEST, json={"seconds": 2}, headers=served.auth("technician"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["result"] == "timeout"
    assert body["stage"] == "pending"  # nothing published it: no dispatcher here
    assert body["round_trip_ms"] is None
    command = served.stores.outbox.latest()["atomium-ctl"]
    assert command.plan.test and command.version == body["version"] == 1
    entries = [e.record for e in served.audit.entries()]
    assert [(r.actor, r.action, r.subject, r.city) for r in entries] == [
        ("tom", "tested", "atomium-ctl", "brussels")
    ]
    assert entries[0].detail == {
        "version": 1,
        "result": "timeout",
        "round_trip_ms": None,
        "seconds": 2.0,
    }


def test_applied_answers_with_the_round_trip(world: World) -> None:
    served, device_ops, clock = world, world.ops, world.clock
    clock.step = 0.0  # the clock stands still until the device answers
    stores = served.stores

    def device() -> None:
        # the device's apply report, stored by the intake, 0.25 s after the test began
        while "atomium-ctl" not in stores.outbox.latest():
            threading.Event().wait(0.01)
        command = stores.outbox.latest()["atomium-ctl"]
        clock.advance(0.25)
        stores.outbox.move([Move(command.id, CommandState.APPLIED, clock())])
        device_ops.flash.notify({"atomium-ctl"})

    helper = threading.Thread(target=device)
    helper.start()
    answer = served.http.post(TEST, headers=served.auth("admin"))
    helper.join(timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "applied"
    assert answer.json()["round_trip_ms"] == 250.0


def test_rate_limits_answer_429_with_retry_after(world: World) -> None:
    served, clock = world, world.clock
    auth = served.auth("admin")
    assert served.http.post(TEST, json={"seconds": 1}, headers=auth).status_code == 200
    again = served.http.post(TEST, json={"seconds": 1}, headers=auth)
    assert again.status_code == 429
    retry = int(again.headers["retry-after"])
    assert 1 <= retry <= 30
    assert "atomium-ctl" in again.json()["detail"]
    # the user's own limit (two here), on another device
    other = "/api/v1/devices/menin-gate-ctl/test"
    assert served.http.post(other, json={"seconds": 1}, headers=auth).status_code == 200
    clock.advance(timedelta(seconds=31))
    third = served.http.post(TEST, json={"seconds": 1}, headers=auth)
    assert third.status_code == 429
    assert "ada ran 2 tests" in third.json()["detail"]
    assert int(third.headers["retry-after"]) >= 1
