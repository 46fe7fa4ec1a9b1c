"""Resume and abort of a staged rollout through the staff API (real HTTP, real SQLite)
and through `illuminate rollouts ...`; each writes an audit entry.

A rollout is made for real: the campaign is changed over the API during its window,
the reconciler sends the canary and the first city, one device rejects, and the next
run pauses the rollout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from controller.access import AuditKind
from controller.cli import main
from controller.lifecycle import CommandState
from controller.metrics import Metrics
from controller.reconcile import Reconciler
from controller.rollout import RolloutState
from controller.store.audit import SqlAuditLog
from controller.store.base import Move, NewDevice, Stores
from controller.store.users import Users
from controller.web.app import build_web
from tests.controller.test_console import csrf_of, field
from tests.controller.test_rollout_reconcile import (
    CATALOG,
    LIVE,
    MINUTE,
    ROLLOUT,
    SITES,
    T0,
    campaign,
)
from tests.controller.test_staff_api import public_view, serve
from tests.support.stores import data_dir_database


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> Any:
        return self.now

    def monotonic(self) -> float:
        return 0.0


@dataclass
class World:
    stores: Stores
    clock: Clock
    reconciler: Reconciler
    audit: SqlAuditLog
    http: httpx.Client | None
    tokens: dict[str, str]

    def run(self) -> None:
        self.reconciler.run(now=self.clock.now)

    def reject(self, device_id: str) -> None:
        command = self.stores.outbox.latest([device_id])[device_id]
        moved = self.stores.outbox.move(
            [Move(command.id, CommandState.REJECTED, self.clock.now, "test")]
        )
        assert moved == [True]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path))
    with data_dir_database(tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices([NewDevice(f"{s}-ctl", s) for s in SITES], T0)
        stores.campaigns.put(campaign(), T0)
        clock = Clock()
        reconciler = Reconciler(stores, clock, timedelta(hours=48), timedelta(seconds=30))
        reconciler.run(now=T0)
        users = Users(sessions)
        tokens = {
            "technician": users.add("tom", "technician", ["brussels"], T0),
            "coordinator": users.add("cora", "coordinator", [], T0),
            "admin": users.add("ada", "admin", [], T0),
        }
        audit = SqlAuditLog(sessions)
        changes: list[int] = []
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
            on_change=lambda: changes.append(1),
            audit=audit,
        )
        with serve(app) as http:
            yield World(stores, clock, reconciler, audit, http, tokens)


def test_a_paused_rollout_is_shown_with_why(world: World) -> None:
    rollout_id = _pause_with_two_results(world)
    assert world.http is not None
    listed = world.http.get("/api/v1/rollouts", headers=world.auth("coordinator"))
    assert listed.status_code == 200
    (item,) = listed.json()
    assert item["id"] == rollout_id
    assert item["state"] == "paused"
    assert item["reason"] == "1 of 2 results failed or were rejected (50.0 %, over 20 %)"
    assert item["sent"] == 2
    assert item["waves"] == {"canary": 1, "city:bruges": 1}
    assert item["results"] == {"applied": 1, "failed": 0, "rejected": 1, "open": 0}
    assert item["config"] == {**ROLLOUT, "city_order": [], "wave_interval": "0s"} | {
        "pause": {"threshold_percentage": 20.0, "min_results": 2}
    }
    one = world.http.get(f"/api/v1/rollouts/{rollout_id}", headers=world.auth("admin"))
    assert one.json() == item
    missing = world.http.get("/api/v1/rollouts/999", headers=world.auth("admin"))
    assert (missing.status_code, missing.json()) == (404, {"detail": "no rollout 999"})
    assert world.http.get("/api/v1/rollouts/abc", headers=world.auth("admin")).status_code == 422
    assert world.http.get("/api/v1/rollouts", headers=world.auth("technician")).status_code == 403


def test_resume_and_abort_through_the_api(world: World) -> None:
    rollout_id = _pause_with_two_results(world)
    assert world.http is not None
    url = f"/api/v1/rollouts/{rollout_id}"
    denied = world.http.post(f"{url}/resume", headers=world.auth("technician"))
    assert denied.status_code == 403
    world.clock.now = LIVE + 2 * MINUTE
    resumed = world.http.post(f"{url}/resume", headers=world.auth("coordinator"))
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["rollout"]["state"] == "running"
    assert resumed.json()["rollout"]["counted"] == {"results": 0, "failures": 0, "percentage": 0}
    again = world.http.post(f"{url}/resume", headers=world.auth("coordinator"))
    assert again.status_code == 409
    assert again.json() == {"detail": f"rollout {rollout_id} is running, not paused"}
    world.run()  # the next wave goes out
    assert world.stores.outbox.latest(["grand-place-ctl"])["grand-place-ctl"].version == 2

    aborted = world.http.post(f"{url}/abort", headers=world.auth("admin"))
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["rollout"]["state"] == "aborted"
    assert aborted.json()["restored"] is True
    stored = world.http.get("/api/v1/campaigns/blue-heart", headers=world.auth("admin"))
    assert stored.json()["color"] == "#009EDB"
    twice = world.http.post(f"{url}/abort", headers=world.auth("admin"))
    assert twice.status_code == 409
    assert twice.json() == {"detail": f"rollout {rollout_id} is aborted: nothing to abort"}
    assert (
        world.http.post("/api/v1/rollouts/999/abort", headers=world.auth("admin")).status_code
        == 404
    )

    entries = [e.record for e in world.audit.entries({AuditKind.CAMPAIGN})]
    assert [(r.actor, r.action, r.subject, r.detail) for r in entries[:2]] == [
        ("ada", "rollout-aborted", "blue-heart", {"rollout": rollout_id, "restored": True}),
        ("cora", "rollout-resumed", "blue-heart", {"rollout": rollout_id}),
    ]
    assert entries[0].at == LIVE + 2 * MINUTE


def _pause_with_two_results(world: World) -> int:
    """Change the campaign during its window; the reconciler sends the canary and the
    first city; the canary applies, the other rejects: 50 % of 2 results, paused."""
    world.clock.now = LIVE
    assert world.http is not None
    body = campaign("#c8102e").model_dump(mode="json")
    answer = world.http.put(
        "/api/v1/campaigns/blue-heart", json=body, headers=world.auth("coordinator")
    )
    assert answer.status_code == 200
    world.run()
    canary = world.stores.outbox.latest(["atomium-ctl"])["atomium-ctl"]
    world.stores.outbox.move([Move(canary.id, CommandState.APPLIED, LIVE, "test")])
    in_force = canary.plan.steps[0]
    view = world.stores.reports.views({"atomium-ctl"})["atomium-ctl"]
    world.stores.reports.save(
        [
            replace(
                view,
                applied_version=canary.version,
                applied_step_at=in_force.at,
                applied_state=in_force.state.model_dump(mode="json"),
                applied_at=LIVE,
            )
        ]
    )
    world.reject("belfry-ctl")
    world.clock.now = LIVE + MINUTE
    world.run()
    assert world.stores.rollouts is not None
    rollout = world.stores.rollouts.recent(1)[0]
    assert rollout.state is RolloutState.PAUSED
    return rollout.id


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_resume_and_abort_through_the_cli(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    rollout_id = _pause_with_two_results(world)
    capsys.readouterr()
    code, out, _ = cli(capsys, "rollouts", "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "1 rollouts"
    assert lines[0].split()[:5] == [
        str(rollout_id),
        "blue-heart",
        "paused",
        "sent=2",
        "failed+rejected=1/2",
    ]
    code, out, _ = cli(capsys, "rollouts", "status", str(rollout_id))
    assert code == 0
    assert out.splitlines()[0] == f"rollout {rollout_id} of campaign blue-heart: paused"
    assert "  sent: 2 (canary 1, city:bruges 1)" in out.splitlines()

    code, out, err = cli(capsys, "rollouts", "resume", str(rollout_id), "--by", "cora")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"rollout {rollout_id} of campaign blue-heart: running"
    code, _, err = cli(capsys, "rollouts", "resume", str(rollout_id))
    assert code == 2
    assert err == f"illuminate: error: rollout {rollout_id} is running, not paused\n"

    code, out, err = cli(capsys, "rollouts", "abort", str(rollout_id), "--by", "ada")
    assert (code, err) == (0, "")
    assert f"rollout {rollout_id} of campaign blue-heart: aborted" in out
    assert "campaign blue-heart is back as it was before the change" in out
    record = world.stores.campaigns.record("blue-heart")
    assert record is not None and record.body["color"] == "#009EDB"
    code, _, err = cli(capsys, "rollouts", "abort", "999")
    assert (code, err) == (2, "illuminate: error: no rollout 999\n")

    entries = [e.record for e in world.audit.entries({AuditKind.CAMPAIGN})]
    assert [(r.actor, r.action, r.detail) for r in entries[:2]] == [
        ("ada", "rollout-aborted", {"rollout": rollout_id, "restored": True}),
        ("cora", "rollout-resumed", {"rollout": rollout_id}),
    ]


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"canary_sites": ["nowhere"]}, "rollout.canary_sites[0]", "unknown site 'nowhere'"),
        ({"city_order": ["ghent"]}, "rollout.city_order[0]", "unknown city 'ghent'"),
        ({"maximum_per_minute": -1}, "rollout.maximum_per_minute", "greater than or equal to 1"),
    ],
)
def test_a_bad_rollout_section_is_a_422_naming_its_field(
    world: World, changes: dict[str, Any], path: str, message: str
) -> None:
    assert world.http is not None
    body = campaign("#c8102e").model_dump(mode="json")
    body["rollout"] = {**body["rollout"], **changes}
    answer = world.http.put(
        "/api/v1/campaigns/blue-heart", json=body, headers=world.auth("coordinator")
    )
    assert answer.status_code == 422
    (item,) = answer.json()["detail"]
    assert item["path"] == path
    assert message in item["message"]
    assert world.stores.rollouts is not None and world.stores.rollouts.recent() == []


def test_schedules_apply_during_an_open_window_says_it_goes_out_in_stages(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    zone = ZoneInfo("Europe/Brussels")
    opened = (datetime.now(UTC) - timedelta(hours=1)).astimezone(zone)
    closes = opened + timedelta(hours=2)  # may end after midnight: the next day, as written

    def write(color: str) -> Path:
        body = campaign(color).model_dump(mode="json")
        window = body["windows"][0]
        window["dates"] = [opened.date().isoformat()]
        window["start"] = {"at": opened.strftime("%H:%M:%S")}
        window["end"] = {"at": closes.strftime("%H:%M:%S")}
        path = tmp_path / f"{color[1:]}.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    code, out, _ = cli(capsys, "schedules", "apply", str(write("#009edb")))
    assert (code, out.splitlines()[0]) == (0, "updated campaign blue-heart")
    assert "in stages" not in out  # the stored version's window was not open: at once
    code, out, _ = cli(capsys, "schedules", "apply", str(write("#c8102e")))
    assert code == 0
    assert world.stores.rollouts is not None
    (rollout,) = world.stores.rollouts.active()
    assert out.splitlines()[1] == (
        f"a window is open: the change goes out in stages, as rollout {rollout.id} "
        f"(illuminate rollouts status {rollout.id})"
    )


def test_resume_and_abort_in_the_console(world: World) -> None:
    """The console does what the API does, through the same functions: a coordinator
    sees why the rollout paused, resumes it, and aborts it after confirming."""
    rollout_id = _pause_with_two_results(world)
    http = world.http
    assert http is not None
    page = http.get("/console/sign-in")
    signed = http.post(
        "/console/sign-in",
        data={"csrf": field(page.text, "csrf"), "token": world.tokens["coordinator"]},
    )
    assert signed.status_code == 303, signed.text
    csrf = csrf_of(http)
    listed = http.get("/console/rollouts")
    assert listed.status_code == 200
    assert f'data-rollout="{rollout_id}" data-state="paused"' in listed.text
    assert f'id="resume-{rollout_id}"' in listed.text and f'id="abort-{rollout_id}"' in listed.text
    refused = http.post(f"/console/rollouts/{rollout_id}/resume", data={})
    assert refused.status_code == 403  # no CSRF token
    world.clock.now = LIVE + 2 * MINUTE
    resumed = http.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf})
    assert resumed.status_code == 200, resumed.text
    assert f"Rollout {rollout_id} resumed." in resumed.text
    assert f'data-rollout="{rollout_id}" data-state="running"' in resumed.text
    again = http.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf})
    assert again.status_code == 409 and "running, not paused" in again.text
    asked = http.post(f"/console/rollouts/{rollout_id}/abort", data={"csrf": csrf})
    assert asked.status_code == 200 and 'id="confirm"' in asked.text
    assert world.stores.rollouts is not None
    assert world.stores.rollouts.recent(1)[0].state is RolloutState.RUNNING  # not yet
    aborted = http.post(
        f"/console/rollouts/{rollout_id}/abort", data={"csrf": csrf, "confirm": "yes"}
    )
    assert aborted.status_code == 200, aborted.text
    assert "the campaign is back as it was" in aborted.text
    assert world.stores.rollouts.recent(1)[0].state is RolloutState.ABORTED
    entries = [e.record for e in world.audit.entries({AuditKind.CAMPAIGN})]
    assert [(r.actor, r.action) for r in entries[:2]] == [
        ("cora", "rollout-aborted"),
        ("cora", "rollout-resumed"),
    ]
