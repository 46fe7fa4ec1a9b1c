"""Registering, reading, rotating and decommissioning devices; editing and deleting sites;
deleting campaigns: over real HTTP (uvicorn) on SQLite and PostgreSQL.

The registrar provisions into `MemoryAccounts`, which makes the broker's login
decisions (the same contract as the dynamic-security plugin, tests/controller/
test_device_accounts.py); tests/integration/test_registry_broker.py runs the same
routes against a real Mosquitto.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.access import AuditKind
from controller.broker.accounts import AccountError, MemoryAccounts
from controller.lifecycle import CommandState
from controller.metrics import Metrics
from controller.public import public_status
from controller.registrar import Registrar
from controller.registration import verify_secret
from controller.store.audit import AuditEntry
from controller.store.base import NewDevice, NewVersion, Stores
from controller.store.users import Users
from controller.web.app import build_web
from devices.connection import BrokerAddress
from devices.protocol import Topics
from schedules.model import Campaign
from tests.controller.test_access_matrix import rollout_of
from tests.controller.test_staff_api import CATALOG, FakeClock, campaign_body, public_view, serve
from tests.support.stores import SQL_KINDS, secret_hash, sql_database

TOPICS = Topics()
ENDPOINT = BrokerAddress("mqtt.example.org", 8883, tls=True)


class FailingAccounts(MemoryAccounts):
    """A broker that is down for every change while `down` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise AccountError("cannot reach the broker at mqtt://127.0.0.1:1: refused")

    def create(self, device_id: str, password: str) -> None:
        self._check()
        super().create(device_id, password)

    def rotate(self, device_id: str, password: str) -> None:
        self._check()
        super().rotate(device_id, password)

    def delete(self, device_id: str) -> bool:
        self._check()
        return super().delete(device_id)


@dataclass
class Api:
    http: httpx.Client
    stores: Stores
    sessions: Any
    accounts: FailingAccounts
    clock: FakeClock
    tokens: dict[str, str]
    changes: list[datetime] = field(default_factory=list)
    revoked: list[tuple[str, bool]] = field(default_factory=list)

    def call(self, method: str, url: str, who: str | None = "admin", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.http.request(method, url, headers=headers, **kw)

    def register(self, device_id: str, site: str = "atomium", who: str = "tom") -> dict[str, Any]:
        answer = self.call("POST", "/api/v1/devices", who, json={"id": device_id, "site": site})
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def audit(self) -> list[AuditEntry]:
        assert self.stores.audit is not None
        return list(reversed(self.stores.audit.entries()))


@pytest.fixture(params=SQL_KINDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    with sql_database(request.param, tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        users = Users(sessions)
        clock = FakeClock()
        accounts = FailingAccounts(TOPICS)
        revoked: list[tuple[str, bool]] = []
        changes: list[datetime] = []
        registrar = Registrar(
            stores, TOPICS, ENDPOINT, accounts, lambda d, gone: revoked.append((d, gone))
        )
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
            on_change=lambda: changes.append(clock()),
            registrar=registrar,
        )
        tokens = {
            "admin": users.add("ada", "admin", [], clock()),
            "coordinator": users.add("cora", "coordinator", [], clock()),
            "tom": users.add("tom", "technician", ["brussels"], clock()),
            "yves": users.add("yves", "technician", ["ypres"], clock()),
        }
        with serve(app) as http:
            yield Api(http, stores, sessions, accounts, clock, tokens, changes, revoked)


# registering ------------------------------------------------------------------------


def test_a_technician_registers_a_device_and_gets_its_mqtt_settings_once(api: Api) -> None:
    answer = api.call(
        "POST", "/api/v1/devices", "tom", json={"id": "atomium-ctl", "site": "atomium"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["location"] == "/api/v1/devices/atomium-ctl"
    body = answer.json()
    password = body["mqtt"].pop("password")
    assert body == {
        "id": "atomium-ctl",
        "mqtt": {
            "host": "mqtt.example.org",
            "port": 8883,
            "tls": True,
            "username": "atomium-ctl",
            "client_id": "atomium-ctl",
            "topics": {
                "plan": "illuminate/v1/devices/atomium-ctl/plan",
                "ack": "illuminate/v1/devices/atomium-ctl/ack",
                "state": "illuminate/v1/devices/atomium-ctl/state",
                "status": "illuminate/v1/devices/atomium-ctl/status",
                "controller_status": "illuminate/v1/controller/status",
            },
            "shared_with": [],
        },
    }
    assert len(password) >= 32
    # the broker account: bound to its id, with this password
    assert api.accounts.login("atomium-ctl", password, "atomium-ctl")
    assert not api.accounts.login("atomium-ctl", password, "other-id")
    stored = secret_hash(api.sessions, "atomium-ctl")
    assert stored is not None and password not in stored and verify_secret(password, stored)
    assert len(api.changes) == 1
    # the password is in that answer only
    for url in ("/api/v1/devices", "/api/v1/devices/atomium-ctl", "/api/v1/audit"):
        assert password not in api.call("GET", url).text
    (entry,) = api.audit()
    assert (entry.record.actor, entry.record.kind, entry.record.action) == (
        "tom",
        AuditKind.DEVICE,
        "registered",
    )
    assert (entry.record.subject, entry.record.city) == ("atomium-ctl", "brussels")
    assert entry.record.detail == {"site": "atomium", "adapter": "native", "via": "api"}


def test_an_id_already_registered_is_409_and_its_account_is_untouched(api: Api) -> None:
    first = api.register("atomium-ctl")
    again = api.call(
        "POST", "/api/v1/devices", "admin", json={"id": "atomium-ctl", "site": "atomium"}
    )
    assert again.status_code == 409
    assert again.json() == {
        "detail": [{"path": "id", "message": "device 'atomium-ctl' is already registered"}]
    }
    assert api.accounts.login("atomium-ctl", first["mqtt"]["password"], "atomium-ctl")
    assert len(api.audit()) == 1


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"id": "Bad_ID", "site": "atomium"}, "id", "invalid device id 'Bad_ID'"),
        ({"id": "illuminate-x", "site": "atomium"}, "id", "reserved"),
        ({"id": "x-ctl", "site": "nowhere"}, "site", "unknown site 'nowhere'"),
        (
            {"id": "x-ctl", "site": "atomium", "adapter": "hue"},
            "adapter",
            "use one of: native, wled",
        ),
        ({"id": "x-ctl", "site": "atomium", "adapter": "wled"}, "config", "topic: required"),
        ({"id": "x-ctl", "site": "atomium", "config": {"a": 1}}, "config", "no config"),
        ({"id": "x-ctl", "site": "atomium", "secret": "x"}, "secret", "Extra inputs"),
        ({"site": "atomium"}, "id", "Field required"),
        ([1, 2], "(top)", "valid dictionary"),
    ],
)
def test_bad_devices_are_422_naming_the_field(api: Api, body: Any, path: str, message: str) -> None:
    answer = api.call("POST", "/api/v1/devices", "admin", json=body)
    assert answer.status_code == 422, answer.text
    (item,) = answer.json()["detail"]
    assert item["path"] == path
    assert message in item["message"]
    assert api.stores.registry.device_ids() == set()
    assert not api.accounts.exists("x-ctl")
    assert api.audit() == []


def test_a_site_of_another_city_is_answered_as_an_unknown_one(api: Api) -> None:
    other = api.call("POST", "/api/v1/devices", "yves", json={"id": "x-ctl", "site": "atomium"})
    missing = api.call("POST", "/api/v1/devices", "yves", json={"id": "x-ctl", "site": "nope"})
    assert other.status_code == missing.status_code == 422
    assert other.json()["detail"][0]["message"] == "unknown site 'atomium'"
    assert missing.json()["detail"][0]["message"] == "unknown site 'nope'"
    assert api.stores.registry.device_ids() == set()


def test_who_may_register(api: Api) -> None:
    body = {"id": "x-ctl", "site": "atomium"}
    assert api.call("POST", "/api/v1/devices", None, json=body).status_code == 401
    assert api.call("POST", "/api/v1/devices", "coordinator", json=body).status_code == 403
    plain = api.http.post(
        "/api/v1/devices",
        content=b"id=x",
        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "text/plain"},
    )
    assert plain.status_code == 415
    assert api.stores.registry.device_ids() == set()


def test_a_broker_that_refuses_the_account_registers_nothing(api: Api) -> None:
    api.accounts.down = True
    answer = api.call("POST", "/api/v1/devices", "tom", json={"id": "x-ctl", "site": "atomium"})
    assert answer.status_code == 503
    assert "nothing was registered" in answer.json()["detail"]
    assert api.stores.registry.device_ids() == set()
    assert api.audit() == []


def test_an_import_provisions_every_account(api: Api) -> None:
    body = {"devices": [{"id": "a-ctl", "site": "atomium"}, {"id": "m-ctl", "site": "menin-gate"}]}
    answer = api.call("POST", "/api/v1/devices/import", "admin", json=body)
    assert answer.status_code == 201, answer.text
    for c in answer.json()["credentials"]:
        assert api.accounts.login(c["id"], c["password"], c["id"])
    assert [(e.record.subject, e.record.city) for e in api.audit()] == [
        ("a-ctl", "brussels"),
        ("m-ctl", "ypres"),
    ]
    # a broker that fails half-way leaves no account and no device behind
    api.accounts.down = True
    more = {"devices": [{"id": "b-ctl", "site": "atomium"}]}
    assert api.call("POST", "/api/v1/devices/import", "admin", json=more).status_code == 503
    assert api.stores.registry.device_ids() == {"a-ctl", "m-ctl"}


# reading ------------------------------------------------------------------------------


def test_technicians_read_their_own_cities_devices_only(api: Api) -> None:
    api.register("atomium-ctl")
    api.register("menin-ctl", "menin-gate", who="yves")
    ids = lambda who: [d["id"] for d in api.call("GET", "/api/v1/devices", who).json()]  # noqa: E731
    assert ids("tom") == ["atomium-ctl"]
    assert ids("yves") == ["menin-ctl"]
    assert ids("coordinator") == ids("admin") == ["atomium-ctl", "menin-ctl"]
    one = api.call("GET", "/api/v1/devices/atomium-ctl", "tom")
    assert one.status_code == 200
    body = one.json()
    assert body["id"] == "atomium-ctl"
    assert (body["site"], body["city"], body["adapter"], body["config"]) == (
        "atomium",
        "brussels",
        "native",
        {},
    )
    assert body["online"] is None and body["decommissioned_at"] is None
    other = api.call("GET", "/api/v1/devices/atomium-ctl", "yves")
    missing = api.call("GET", "/api/v1/devices/nothing-here", "yves")
    assert other.status_code == missing.status_code == 404
    assert other.json() == {"detail": "no device 'atomium-ctl'"}
    assert api.call("GET", "/api/v1/devices/Bad_Id", "tom").status_code == 422


# rotating -----------------------------------------------------------------------------


def test_rotation_kills_the_old_password_and_shows_the_device_offline(api: Api) -> None:
    old = api.register("atomium-ctl")["mqtt"]["password"]
    view = api.stores.reports.views()["atomium-ctl"]
    api.stores.reports.save([replace(view, online=True, status_at=api.clock())])
    answer = api.call("POST", "/api/v1/devices/atomium-ctl/credentials", "tom")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    new = answer.json()["mqtt"]["password"]
    assert new != old
    assert not api.accounts.login("atomium-ctl", old, "atomium-ctl")
    assert api.accounts.login("atomium-ctl", new, "atomium-ctl")
    stored = secret_hash(api.sessions, "atomium-ctl")
    assert stored is not None and verify_secret(new, stored) and not verify_secret(old, stored)
    device = api.call("GET", "/api/v1/devices/atomium-ctl", "tom").json()
    assert device["online"] is False
    assert device["credentials_rotated_at"] is not None
    assert api.revoked == [("atomium-ctl", False)]
    assert [e.record.action for e in api.audit()] == ["registered", "credentials-rotated"]
    assert new not in api.call("GET", "/api/v1/audit").text


def test_rotation_is_refused_across_cities_for_coordinators_and_when_the_broker_fails(
    api: Api,
) -> None:
    old = api.register("atomium-ctl")["mqtt"]["password"]
    url = "/api/v1/devices/atomium-ctl/credentials"
    assert api.call("POST", url, "yves").status_code == 404
    assert api.call("POST", url, "coordinator").status_code == 403
    assert api.call("POST", "/api/v1/devices/nothing/credentials", "admin").status_code == 404
    api.accounts.down = True
    failed = api.call("POST", url, "tom")
    assert failed.status_code == 503
    assert "nothing was changed" in failed.json()["detail"]
    api.accounts.down = False
    # the registry did not change with it: same hash, no entry, not marked offline
    stored = secret_hash(api.sessions, "atomium-ctl")
    assert stored is not None and verify_secret(old, stored)
    assert api.accounts.login("atomium-ctl", old, "atomium-ctl")
    assert [e.record.action for e in api.audit()] == ["registered"]
    assert api.revoked == []


def test_rotation_creates_the_account_of_a_device_registered_without_one(api: Api) -> None:
    api.stores.registry.add_devices([NewDevice("legacy-ctl", "atomium")], api.clock())
    answer = api.call("POST", "/api/v1/devices/legacy-ctl/credentials", "tom")
    assert answer.status_code == 200
    assert api.accounts.login("legacy-ctl", answer.json()["mqtt"]["password"], "legacy-ctl")


# decommissioning ----------------------------------------------------------------------


def test_decommissioning_revokes_the_credentials_and_keeps_the_history(api: Api) -> None:
    password = api.register("atomium-ctl")["mqtt"]["password"]
    now = api.clock()
    (command,) = api.stores.outbox.add_versions(
        [NewVersion("atomium-ctl", 1, '{"v":1}', now, None)]
    )
    answer = api.call("DELETE", "/api/v1/devices/atomium-ctl", "tom")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "atomium-ctl"
    assert body["decommissioned_at"] is not None
    assert body["online"] is False
    # the broker account is gone
    assert not api.accounts.exists("atomium-ctl")
    assert not api.accounts.login("atomium-ctl", password, "atomium-ctl")
    assert secret_hash(api.sessions, "atomium-ctl") is None
    assert api.revoked == [("atomium-ctl", True)]
    # out of service: no view (nothing plans for it, the site does not show it)
    assert "atomium-ctl" not in api.stores.reports.views()
    assert api.stores.outbox.latest()["atomium-ctl"].state is CommandState.SUPERSEDED
    # the history stays: record, commands, events, and the id is not reused
    kept = api.call("GET", "/api/v1/devices/atomium-ctl", "tom").json()
    assert kept["decommissioned_at"] == body["decommissioned_at"]
    events = api.stores.outbox.events("atomium-ctl")
    assert [(e.command_id, e.to_state) for e in events] == [
        (command.id, CommandState.PENDING),
        (command.id, CommandState.SUPERSEDED),
    ]
    assert events[-1].detail == "device decommissioned"
    assert api.call("GET", "/api/v1/devices", "tom").json() == []
    listed = api.call("GET", "/api/v1/devices?decommissioned=true", "tom").json()
    assert [d["id"] for d in listed] == ["atomium-ctl"]
    again = api.call(
        "POST", "/api/v1/devices", "tom", json={"id": "atomium-ctl", "site": "atomium"}
    )
    assert again.status_code == 409
    twice = api.call("DELETE", "/api/v1/devices/atomium-ctl", "tom")
    assert twice.status_code == 409
    assert twice.json() == {"detail": "device 'atomium-ctl' is decommissioned"}
    rotate = api.call("POST", "/api/v1/devices/atomium-ctl/credentials", "tom")
    assert rotate.status_code == 409
    assert [e.record.action for e in api.audit()] == ["registered", "decommissioned"]
    assert api.audit()[-1].record.detail == {"site": "atomium"}


def test_a_stray_device_decommissioned_no_longer_makes_its_site_offline(api: Api) -> None:
    api.stores.campaigns.put(Campaign.model_validate(campaign_body()), api.clock())
    api.register("atomium-ctl")
    api.register("stray-ctl")
    views = api.stores.reports.views()
    in_window = datetime(2026, 7, 30, 19, 30, 10, tzinfo=UTC)  # 10 s into the window
    api.stores.reports.save(
        [
            replace(views["atomium-ctl"], online=True, status_at=in_window),
            replace(views["stray-ctl"], online=False, status_at=in_window),
        ]
    )

    def atomium() -> str:
        status = public_status(
            api.stores.snapshot(), in_window, timedelta(seconds=30), timedelta(hours=24)
        )
        return next(s.state.value for s in status.sites if s.id == "atomium")

    assert atomium() == "offline"
    assert api.call("DELETE", "/api/v1/devices/stray-ctl", "tom").status_code == 200
    assert atomium() == "pending"  # the device in service is online, not confirmed yet


def test_decommissioning_is_refused_across_cities_and_when_the_broker_fails(api: Api) -> None:
    password = api.register("atomium-ctl")["mqtt"]["password"]
    assert api.call("DELETE", "/api/v1/devices/atomium-ctl", "yves").status_code == 404
    assert api.call("DELETE", "/api/v1/devices/atomium-ctl", "coordinator").status_code == 403
    assert api.call("DELETE", "/api/v1/devices/nothing", "admin").status_code == 404
    api.accounts.down = True
    assert api.call("DELETE", "/api/v1/devices/atomium-ctl", "tom").status_code == 503
    api.accounts.down = False
    assert "atomium-ctl" in api.stores.reports.views()
    assert api.accounts.login("atomium-ctl", password, "atomium-ctl")
    assert [e.record.action for e in api.audit()] == ["registered"]


# sites --------------------------------------------------------------------------------

NEW_SITE = {
    "city": "brussels",
    "name": {"en": "Manneken Pis", "fr": "Manneken-Pis"},
    "lat": 50.845,
    "lon": 4.35,
    "tags": ["fountain"],
}


def test_a_technician_creates_and_replaces_a_site_of_their_city(api: Api) -> None:
    created = api.call("PUT", "/api/v1/sites/manneken-pis", "tom", json=NEW_SITE)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/sites/manneken-pis"
    assert created.json() == {"id": "manneken-pis", **NEW_SITE}
    replaced = api.call(
        "PUT", "/api/v1/sites/manneken-pis", "tom", json={**NEW_SITE, "lat": 50.8451}
    )
    assert replaced.status_code == 200
    assert api.call("GET", "/api/v1/sites/manneken-pis", "tom").json()["lat"] == 50.8451
    assert len(api.changes) == 2
    assert [(e.record.action, e.record.subject, e.record.city) for e in api.audit()] == [
        ("created", "manneken-pis", "brussels"),
        ("replaced", "manneken-pis", "brussels"),
    ]
    assert all(e.record.kind is AuditKind.SITE for e in api.audit())


def test_site_edits_are_refused_across_cities_and_for_coordinators(api: Api) -> None:
    url = "/api/v1/sites/atomium"
    atomium = {**NEW_SITE, "name": {"en": "Atomium"}}
    assert api.call("PUT", url, "yves", json=atomium).status_code == 404
    assert api.call("PUT", url, "coordinator", json=atomium).status_code == 403
    # a technician may not place (or move) a site into a city not theirs
    moved = api.call("PUT", url, "tom", json={**atomium, "city": "ypres"})
    assert moved.status_code == 403
    foreign = api.call("PUT", "/api/v1/sites/new-one", "tom", json={**atomium, "city": "ypres"})
    assert foreign.status_code == 403
    # an admin may
    assert api.call("PUT", url, "admin", json={**atomium, "city": "ypres"}).status_code == 200
    assert api.call("GET", url, "tom").status_code == 404
    assert [e.record.detail for e in api.audit()] == [{"from_city": "brussels"}]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({**NEW_SITE, "lat": 91}, "lat"),
        ({**NEW_SITE, "city": "atlantis"}, "city"),
        ({**NEW_SITE, "id": "other"}, "id"),
        ({**NEW_SITE, "colour": "red"}, "colour"),
        ({**NEW_SITE, "name": {}}, "name"),
        ("a site", "(top)"),
    ],
)
def test_bad_sites_are_422(api: Api, body: Any, path: str) -> None:
    answer = api.call("PUT", "/api/v1/sites/manneken-pis", "admin", json=body)
    assert answer.status_code == 422, answer.text
    assert [item["path"] for item in answer.json()["detail"]] == [path]
    assert api.call("GET", "/api/v1/sites/manneken-pis").status_code == 404
    assert api.audit() == []


def test_a_site_is_deleted_once_its_devices_are_decommissioned(api: Api) -> None:
    api.register("atomium-ctl")
    busy = api.call("DELETE", "/api/v1/sites/atomium", "tom")
    assert busy.status_code == 409
    assert busy.json()["devices"] == ["atomium-ctl"]
    assert "decommission them first" in busy.json()["detail"]
    assert api.call("DELETE", "/api/v1/sites/atomium", "yves").status_code == 404
    assert api.call("DELETE", "/api/v1/sites/atomium", "coordinator").status_code == 403
    assert api.call("DELETE", "/api/v1/devices/atomium-ctl", "tom").status_code == 200
    deleted = api.call("DELETE", "/api/v1/sites/atomium", "tom")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert api.call("GET", "/api/v1/sites/atomium", "tom").status_code == 404
    assert [s["id"] for s in api.call("GET", "/api/v1/sites").json()] == ["menin-gate"]
    assert "atomium" not in {s.id for s in api.stores.snapshot().catalog.sites}
    assert api.call("DELETE", "/api/v1/sites/atomium", "tom").status_code == 404
    # its decommissioned device still resolves its city
    kept = api.call("GET", "/api/v1/devices/atomium-ctl", "tom").json()
    assert (kept["site"], kept["city"]) == ("atomium", "brussels")
    assert [e.record.action for e in api.audit()][-1] == "deleted"
    assert api.audit()[-1].record.kind is AuditKind.SITE
    # and the site can be created again
    again = api.call("PUT", "/api/v1/sites/atomium", "tom", json={**NEW_SITE, "name": {"en": "A"}})
    assert again.status_code == 201


# campaigns ----------------------------------------------------------------------------


def test_a_coordinator_deletes_a_campaign(api: Api) -> None:
    api.stores.campaigns.put(Campaign.model_validate(campaign_body()), api.clock())
    assert api.call("DELETE", "/api/v1/campaigns/blue-heart", "tom").status_code == 403
    assert api.call("DELETE", "/api/v1/campaigns/blue-heart", None).status_code == 401
    assert api.call("DELETE", "/api/v1/campaigns/Bad_Id", "coordinator").status_code == 422
    deleted = api.call("DELETE", "/api/v1/campaigns/blue-heart", "coordinator")
    assert deleted.status_code == 204
    assert api.stores.campaigns.all() == ()
    assert api.call("GET", "/api/v1/campaigns/blue-heart", "coordinator").status_code == 404
    assert api.call("DELETE", "/api/v1/campaigns/blue-heart", "coordinator").status_code == 404
    assert len(api.changes) == 1
    (entry,) = api.audit()
    assert (entry.record.actor, entry.record.kind, entry.record.action, entry.record.subject) == (
        "cora",
        AuditKind.CAMPAIGN,
        "deleted",
        "blue-heart",
    )
    # coordinators read campaign entries in the audit log
    read = api.call("GET", "/api/v1/audit", "coordinator").json()
    assert [e["action"] for e in read["entries"]] == ["deleted"]


def test_deleting_a_campaign_stops_its_staged_rollout(api: Api) -> None:
    api.stores.campaigns.put(Campaign.model_validate(campaign_body()), api.clock())
    assert api.stores.rollouts is not None
    started = api.stores.rollouts.start(rollout_of(campaign_body()))
    assert [r.id for r in api.stores.rollouts.active()] == [started.id]
    assert api.call("DELETE", "/api/v1/campaigns/blue-heart", "coordinator").status_code == 204
    assert api.stores.rollouts.active() == []
