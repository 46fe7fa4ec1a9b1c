"""Registering third-party devices: `POST /api/v1/devices` with an adapter and its config
over real HTTP on SQLite; the broker accounts scoped to the adapter's vendor topics (in
memory, in the controller's own accounts, and the gate the embedded broker asks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.broker.accounts import MemoryAccounts, Scope
from controller.broker.gate import BrokerGate, ControllerAccount
from controller.broker.local_accounts import LocalAccounts
from controller.metrics import Metrics
from controller.registrar import Registrar
from controller.store.base import Stores
from controller.store.users import Users
from controller.web.app import build_web
from devices.connection import BrokerAddress
from devices.protocol import Topics
from tests.controller.test_staff_api import CATALOG, FakeClock, public_view, serve
from tests.support.stores import sql_database

TOPICS = Topics()
ENDPOINT = BrokerAddress("mqtt.example.org", 8883, tls=True)
WLED = {"topic": "wled/atomium"}


@dataclass
class Api:
    http: httpx.Client
    stores: Stores
    accounts: MemoryAccounts
    token: str

    def register(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            "/api/v1/devices", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with sql_database("sqlite", tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        users = Users(sessions)
        clock = FakeClock()
        accounts = MemoryAccounts(TOPICS)
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
            on_change=lambda: None,
            registrar=Registrar(stores, TOPICS, ENDPOINT, accounts),
        )
        token = users.add("tom", "technician", ["brussels"], clock())
        with serve(app) as http:
            yield Api(http, stores, accounts, token)


def test_a_wled_registers_with_its_vendor_topics_as_its_whole_scope(api: Api) -> None:
    answer = api.register(
        {"id": "atomium-wled", "site": "atomium", "adapter": "wled", "config": WLED}
    )
    assert answer.status_code == 201, answer.text
    mqtt = answer.json()["mqtt"]
    assert mqtt["topics"] == {
        "reports": ["wled/atomium/status", "wled/atomium/g", "wled/atomium/c", "wled/atomium/v"],
        "commands": ["wled/atomium/api"],
    }
    record = api.stores.registry.devices(["atomium-wled"])["atomium-wled"]
    assert (record.adapter, record.config) == ("wled", WLED)
    accounts = api.accounts
    assert accounts.login("atomium-wled", mqtt["password"], "atomium-wled")
    assert accounts.may_publish("atomium-wled", "wled/atomium/c")
    assert accounts.may_subscribe("atomium-wled", "wled/atomium/api")
    assert accounts.may_receive("atomium-wled", "wled/atomium/api")
    assert not accounts.may_publish("atomium-wled", "wled/atomium/api")
    assert not accounts.may_publish("atomium-wled", "wled/other/c")
    assert not accounts.may_publish("atomium-wled", "illuminate/v1/devices/atomium-wled/ack")
    # its firmware's own filters may be wide; what it receives is its commands only
    assert accounts.may_subscribe("atomium-wled", "wled/atomium")
    assert not accounts.may_subscribe("atomium-wled", "$CONTROL/dynamic-security/v1/response")
    assert not accounts.may_receive("atomium-wled", "wled/other/api")
    assert not accounts.may_receive("atomium-wled", "illuminate/v1/devices/other/plan")


def test_the_config_is_stored_as_the_adapter_read_it(api: Api) -> None:
    body = {"topic": "fountain1", "full_topic": "city/%topic%/%prefix%"}
    answer = api.register({"id": "t-1", "site": "atomium", "adapter": "tasmota", "config": body})
    assert answer.status_code == 201, answer.text
    config = api.stores.registry.devices(["t-1"])["t-1"].config
    assert config == {"topic": "fountain1", "full_topic": "city/%topic%/%prefix%/"}
    assert "city/fountain1/cmnd/Backlog" in answer.json()["mqtt"]["topics"]["commands"]


@pytest.mark.parametrize(
    ("adapter", "config", "message"),
    [
        ("wled", {}, "topic: required"),
        ("wled", {"topic": "wled/#"}, "must not contain"),
        ("wled", {"topic": "w", "colour": 1}, "colour: unknown key"),
        ("tasmota", {"topic": "t", "full_topic": "%topic%/"}, "%prefix%"),
        ("shelly-gen2", {"prefix": "s", "profile": "disco"}, "profile"),
        ("wled", {"topic": "illuminate/v1/devices/x"}, "under the topic root"),
        ("native", {"topic": "x"}, "native devices take no config"),
    ],
)
def test_a_config_the_adapter_refuses_is_422_naming_the_field(
    api: Api, adapter: str, config: dict[str, Any], message: str
) -> None:
    answer = api.register({"id": "d-1", "site": "atomium", "adapter": adapter, "config": config})
    assert answer.status_code == 422, answer.text
    (item,) = answer.json()["detail"]
    assert item["path"] == "config" and message in item["message"], item
    assert api.stores.registry.device_ids() == set()
    assert not api.accounts.exists("d-1")


def test_an_unknown_adapter_is_422(api: Api) -> None:
    answer = api.register({"id": "d-1", "site": "atomium", "adapter": "hue", "config": {}})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["path"] == "adapter"


def test_two_devices_cannot_share_a_controller(api: Api) -> None:
    first = api.register({"id": "w-1", "site": "atomium", "adapter": "wled", "config": WLED})
    assert first.status_code == 201
    again = api.register({"id": "w-2", "site": "atomium", "adapter": "wled", "config": WLED})
    assert again.status_code == 422
    assert "already used by device 'w-1'" in again.json()["detail"][0]["message"]
    # lights behind one Zigbee2MQTT bridge share the bridge's state topic, and only that
    z2m = {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"}
    for i, name in enumerate(("belfry/flood1", "belfry/flood2")):
        ok = api.register(
            {
                "id": f"z-{i}",
                "site": "atomium",
                "adapter": "zigbee2mqtt",
                "config": {**z2m, "friendly_name": name},
            }
        )
        assert ok.status_code == 201, ok.text


def test_the_controllers_own_accounts_keep_the_scope_and_the_gate_lets_the_controller_in(
    tmp_path: Path,
) -> None:
    accounts = LocalAccounts(tmp_path / "accounts.sqlite", TOPICS)
    scope = Scope(("wled/a/status", "wled/a/g"), ("wled/a/api",))
    accounts.create("wled-a", "pw-a", scope)
    accounts.create("native-b", "pw-b")
    again = LocalAccounts(tmp_path / "accounts.sqlite", TOPICS)  # another process
    assert again.may_publish("wled-a", "wled/a/g")
    assert again.may_subscribe("wled-a", "wled/a/api")
    assert not again.may_publish("wled-a", "illuminate/v1/devices/wled-a/state")
    assert again.may_publish("native-b", "illuminate/v1/devices/native-b/state")
    assert not again.may_publish("native-b", "wled/a/g")
    gate = BrokerGate(ControllerAccount("ctl", "ctl", "secret"), again, TOPICS)
    assert gate.may_subscribe("ctl", "wled/a/g")
    assert gate.may_publish("ctl", "wled/a/api")
    assert gate.may_receive("ctl", "wled/a/status")
    assert not gate.may_subscribe("ctl", "wled/#")
    assert not gate.may_publish("ctl", "wled/b/api")


def test_a_rotation_keeps_the_scope(api: Api) -> None:
    first = api.register({"id": "w-1", "site": "atomium", "adapter": "wled", "config": WLED})
    assert first.status_code == 201
    rotated = api.http.post(
        "/api/v1/devices/w-1/credentials", headers={"Authorization": f"Bearer {api.token}"}
    )
    assert rotated.status_code == 200, rotated.text
    mqtt = rotated.json()["mqtt"]
    assert mqtt["topics"] == first.json()["mqtt"]["topics"]
    assert api.accounts.login("w-1", mqtt["password"], "w-1")
    assert api.accounts.may_publish("w-1", "wled/atomium/g")


Z2M = {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"}


def _z2m(api: Api, device_id: str, name: str, base: str = "zigbee2mqtt") -> httpx.Response:
    return api.register(
        {
            "id": device_id,
            "site": "atomium",
            "adapter": "zigbee2mqtt",
            "config": {"base_topic": base, "friendly_name": name},
        }
    )


def test_the_lights_behind_one_bridge_share_its_one_account(api: Api) -> None:
    first = _z2m(api, "flood-1", "belfry/flood1")
    assert first.status_code == 201, first.text
    bridge = first.json()["mqtt"]
    assert (bridge["username"], bridge["client_id"]) == ("z2m-zigbee2mqtt", "z2m-zigbee2mqtt")
    assert bridge["password"] and bridge["shared_with"] == []
    assert bridge["topics"]["commands"] == [
        "zigbee2mqtt/belfry/flood1/set",
        "zigbee2mqtt/belfry/flood1/get",
    ]
    second = _z2m(api, "flood-2", "belfry/flood2")
    assert second.status_code == 201, second.text
    mqtt = second.json()["mqtt"]
    assert mqtt["username"] == "z2m-zigbee2mqtt"
    assert mqtt["password"] is None  # the bridge's password is unchanged
    assert mqtt["shared_with"] == ["flood-1"]
    assert not api.accounts.exists("flood-1") and not api.accounts.exists("flood-2")
    # one login, bound to the bridge's name, speaks for both lights, and the bridge
    accounts = api.accounts
    assert accounts.login("z2m-zigbee2mqtt", bridge["password"], "z2m-zigbee2mqtt")
    assert not accounts.login("z2m-zigbee2mqtt", bridge["password"], "flood-2")
    for light in ("belfry/flood1", "belfry/flood2"):
        assert accounts.may_publish("z2m-zigbee2mqtt", f"zigbee2mqtt/{light}")
        assert accounts.may_publish("z2m-zigbee2mqtt", f"zigbee2mqtt/{light}/availability")
        assert accounts.may_receive("z2m-zigbee2mqtt", f"zigbee2mqtt/{light}/set")
    assert accounts.may_publish("z2m-zigbee2mqtt", "zigbee2mqtt/bridge/state")
    assert not accounts.may_publish("z2m-zigbee2mqtt", "wled/atomium/c")
    assert not accounts.may_publish("z2m-zigbee2mqtt", "illuminate/v1/devices/flood-1/ack")
    assert not accounts.may_receive("z2m-zigbee2mqtt", "illuminate/v1/devices/flood-1/plan")


def test_a_bridges_account_is_rotated_for_all_and_goes_with_its_last_light(api: Api) -> None:
    first = _z2m(api, "flood-1", "belfry/flood1").json()["mqtt"]
    assert _z2m(api, "flood-2", "belfry/flood2").status_code == 201
    auth = {"Authorization": f"Bearer {api.token}"}
    rotated = api.http.post("/api/v1/devices/flood-2/credentials", headers=auth)
    assert rotated.status_code == 200, rotated.text
    mqtt = rotated.json()["mqtt"]
    assert (mqtt["username"], mqtt["shared_with"]) == ("z2m-zigbee2mqtt", ["flood-1"])
    assert api.accounts.login("z2m-zigbee2mqtt", mqtt["password"], "z2m-zigbee2mqtt")
    assert not api.accounts.login("z2m-zigbee2mqtt", first["password"], "z2m-zigbee2mqtt")
    gone = api.http.delete("/api/v1/devices/flood-1", headers=auth)
    assert gone.status_code == 200, gone.text
    assert api.accounts.exists("z2m-zigbee2mqtt")  # flood-2 is still behind it
    assert api.accounts.login("z2m-zigbee2mqtt", mqtt["password"], "z2m-zigbee2mqtt")
    last = api.http.delete("/api/v1/devices/flood-2", headers=auth)
    assert last.status_code == 200, last.text
    assert not api.accounts.exists("z2m-zigbee2mqtt")


@pytest.mark.parametrize(
    ("first", "then", "fault"),
    [
        # a light's topics under another controller's base topic, and the other way round
        (
            ("zigbee2mqtt", {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"}),
            ("wled", {"topic": "zigbee2mqtt/strip"}),
            "is under the base topic 'zigbee2mqtt'",
        ),
        (
            ("wled", {"topic": "wled/atomium"}),
            ("zigbee2mqtt", {"base_topic": "wled", "friendly_name": "flood1"}),
            "base_topic 'wled' holds topic 'wled/atomium",
        ),
        (
            ("zigbee2mqtt", {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"}),
            ("native", {}),
            "is the broker account of the bridge of z-first",
        ),
    ],
)
def test_a_bridges_base_topic_is_its_own(
    api: Api, first: tuple[str, dict[str, Any]], then: tuple[str, dict[str, Any]], fault: str
) -> None:
    adapter, config = first
    ok = api.register({"id": "z-first", "site": "atomium", "adapter": adapter, "config": config})
    assert ok.status_code == 201, ok.text
    adapter, config = then
    body: dict[str, Any] = {"id": "w-then", "site": "atomium", "adapter": adapter}
    if adapter == "native":
        body = {"id": "z2m-zigbee2mqtt", "site": "atomium"}
    else:
        body["config"] = config
    refused = api.register(body)
    assert refused.status_code == 422, refused.text
    assert fault in refused.text


def test_a_bridge_may_not_hold_the_topic_root(api: Api) -> None:
    refused = _z2m(api, "flood-1", "flood1", base="illuminate")
    assert refused.status_code == 422
    assert "holds the topic root" in refused.text


def test_the_gate_lets_the_controller_use_a_bridges_topics_and_no_wider_filter(
    tmp_path: Path,
) -> None:
    accounts = LocalAccounts(tmp_path / "accounts.sqlite", TOPICS)
    accounts.create("z2m-zigbee2mqtt", "pw", Scope(("zigbee2mqtt/#",), ("zigbee2mqtt/#",)))
    gate = BrokerGate(ControllerAccount("ctl", "ctl", "secret"), accounts, TOPICS)
    assert gate.may_subscribe("ctl", "zigbee2mqtt/belfry/flood1")
    assert gate.may_publish("ctl", "zigbee2mqtt/belfry/flood1/set")
    assert gate.may_receive("ctl", "zigbee2mqtt/bridge/state")
    assert not gate.may_subscribe("ctl", "zigbee2mqtt/#")
    assert not gate.may_subscribe("ctl", "zigbee2mqtt/+")
    assert not gate.may_publish("ctl", "zigbee2mqtt-other/flood1/set")
    assert accounts.may_publish("z2m-zigbee2mqtt", "zigbee2mqtt/belfry/flood2")
    assert not accounts.may_publish("z2m-zigbee2mqtt", "illuminate/v1/devices/x/ack")


def test_a_bridge_whose_account_the_broker_lacks_is_given_one(api: Api) -> None:
    """Its first light registered while the broker kept no accounts (or under an older
    scheme): the next light's registration makes the bridge's account, and says so."""
    assert _z2m(api, "flood-1", "belfry/flood1").status_code == 201
    assert api.accounts.delete("z2m-zigbee2mqtt")
    answer = _z2m(api, "flood-2", "belfry/flood2")
    assert answer.status_code == 201, answer.text
    mqtt = answer.json()["mqtt"]
    assert mqtt["password"] and mqtt["shared_with"] == ["flood-1"]
    assert api.accounts.login("z2m-zigbee2mqtt", mqtt["password"], "z2m-zigbee2mqtt")


def test_a_lights_own_account_from_before_bridges_goes_with_a_rotation_or_decommission(
    api: Api,
) -> None:
    assert _z2m(api, "flood-1", "belfry/flood1").status_code == 201
    assert _z2m(api, "flood-2", "belfry/flood2").status_code == 201
    for light in ("flood-1", "flood-2"):  # as an older registration made them
        api.accounts.create(light, "old-pw", Scope((f"zigbee2mqtt/belfry/{light}",), ()))
    auth = {"Authorization": f"Bearer {api.token}"}
    assert api.http.post("/api/v1/devices/flood-1/credentials", headers=auth).status_code == 200
    assert not api.accounts.exists("flood-1")
    assert api.http.delete("/api/v1/devices/flood-2", headers=auth).status_code == 200
    assert not api.accounts.exists("flood-2")
    assert api.accounts.exists("z2m-zigbee2mqtt")  # flood-1 is still behind the bridge
