"""Registration, rotation and decommissioning through the staff API of a running
controller, against a real Mosquitto with the dynamic-security plugin: the controller
provisions the accounts itself (`broker.dynsec_admin_username`).

The device is a real MQTT connection with its last will. The broker kicks it without
the will when its account changes; the controller then says, retained, that it is
offline, and shows it offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app import Controller
from controller.broker.dynsec import DynsecAccounts
from controller.broker.link import PahoBroker
from controller.lifecycle import CommandState
from controller.settings import load_settings
from devices.protocol import Topics
from schedules.model import SiteCatalog
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until, window_campaign
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    DYNSEC_ADMIN_PASSWORD,
    DYNSEC_ADMIN_USER,
    Mosquitto,
)
from tests.support.mqtt5 import WAIT_S, Probe, can_connect

pytestmark = pytest.mark.broker

T = Topics()
BIRTH = b'{"v":1,"online":true}'
WILL = b'{"v":1,"online":false}'
SITES = SiteCatalog.model_validate(
    {
        "cities": [{"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.89,
                "lon": 4.34,
            }
        ],
    }
)


@dataclass
class Running:
    broker: Mosquitto
    controller: Controller
    http: httpx.Client
    token: str

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.http.request(
            method, url, headers={"Authorization": f"Bearer {self.token}"}, **kw
        )

    def online(self, device_id: str) -> bool | None:
        view = self.controller.stores.reports.views([device_id]).get(device_id)
        return None if view is None else view.online

    def device(self, device_id: str, password: str) -> Probe:
        """The device's own connection, MQTT 3.1.1 as the agent runs, with its will."""
        return Probe(
            self.broker.port,
            device_id,
            password,
            device_id,
            will=(T.status(device_id), WILL),
            mqtt311=True,
        )

    def retained(self, topic: str) -> bytes:
        """What the broker holds retained on `topic`, read as the dynsec admin."""
        with Probe(self.broker.port, DYNSEC_ADMIN_USER, DYNSEC_ADMIN_PASSWORD, "reader") as p:
            assert p.connect()
            assert p.subscribe(topic)
            (message,) = p.messages.wait_for(lambda xs: len(xs) >= 1, WAIT_S)
            return message.payload


@pytest.fixture
def running(tmp_path: Path, dynsec_mosquitto: Mosquitto) -> Iterator[Running]:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        broker={
            "url": dynsec_mosquitto.url,
            "username": CONTROLLER_USER,
            "password": CONTROLLER_PASSWORD,
            "dynsec_admin_username": DYNSEC_ADMIN_USER,
            "dynsec_admin_password": DYNSEC_ADMIN_PASSWORD,
        },
        control={"tick_s": 1.0},
    )
    controller = Controller(settings)
    try:
        controller.start()
        assert controller.broker is not None and controller.broker.wait_connected(DEADLINE)
        controller.stores.registry.import_catalog(SITES)
        token = controller.users.add("tom", "technician", ["brussels"], controller.clock())
        with serve(controller.web) as http:
            yield Running(dynsec_mosquitto, controller, http, token)
    finally:
        controller.stop()


def test_register_rotate_and_decommission_on_the_broker(running: Running) -> None:
    port = running.broker.port
    accounts = DynsecAccounts(running.broker.admin_address, T)

    # register: the account exists at once, bound to the device's id
    answer = running.call("POST", "/api/v1/devices", json={"id": "atomium-ctl", "site": "atomium"})
    assert answer.status_code == 201, answer.text
    mqtt = answer.json()["mqtt"]
    assert (mqtt["host"], mqtt["port"], mqtt["tls"]) == ("127.0.0.1", port, False)
    first = mqtt["password"]
    assert accounts.exists("atomium-ctl")
    assert not can_connect(port, "atomium-ctl", first, "someone-else")

    device = running.device("atomium-ctl", first)
    try:
        assert device.connect()
        assert device.publish(T.status("atomium-ctl"), BIRTH, retain=True)
        assert wait_until(lambda: running.online("atomium-ctl") is True, DEADLINE)

        # rotate: the broker closes the connection (without the will), the old
        # password fails at once, the controller shows the device offline
        rotated = running.call("POST", "/api/v1/devices/atomium-ctl/credentials")
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["mqtt"]["password"]
        device.disconnects.wait_for(lambda xs: len(xs) >= 1, WAIT_S)
    finally:
        device.close()
    assert not can_connect(port, "atomium-ctl", first, "atomium-ctl", mqtt311=True)
    assert not can_connect(port, "atomium-ctl", first, "atomium-ctl")
    assert running.online("atomium-ctl") is False
    assert json.loads(running.retained(T.status("atomium-ctl"))) == {"v": 1, "online": False}

    # the device comes back with its new password
    renewed = running.device("atomium-ctl", second)
    try:
        assert renewed.connect()
        assert renewed.publish(T.status("atomium-ctl"), BIRTH, retain=True)
        assert wait_until(lambda: running.online("atomium-ctl") is True, DEADLINE)

        # decommission: the account is gone, the connection closed, no login works
        gone = running.call("DELETE", "/api/v1/devices/atomium-ctl")
        assert gone.status_code == 200, gone.text
        renewed.disconnects.wait_for(lambda xs: len(xs) >= 1, WAIT_S)
    finally:
        renewed.close()
    assert not accounts.exists("atomium-ctl")
    assert not can_connect(port, "atomium-ctl", second, "atomium-ctl", mqtt311=True)
    assert not can_connect(port, "atomium-ctl", second, "atomium-ctl")
    assert "atomium-ctl" not in running.controller.stores.reports.views()
    assert json.loads(running.retained(T.status("atomium-ctl"))) == {"v": 1, "online": False}
    record = running.controller.stores.registry.devices(["atomium-ctl"])["atomium-ctl"]
    assert record.decommissioned_at is not None


def test_the_lights_behind_a_bridge_share_its_account_and_the_next_changes_nothing(
    running: Running,
) -> None:
    """Two Zigbee lights behind one bridge: the first light's registration makes the
    bridge's account (rights over `belfry/#`) and gives the controller's role those
    rights (the broker then closes the controller's connection once); the second's
    changes nothing on the broker, so the controller stays connected. The bridge, one
    login, speaks for both."""
    link = running.controller.broker
    assert isinstance(link, PahoBroker)

    def light(device_id: str, name: str) -> dict[str, Any]:
        config = {"base_topic": "belfry", "friendly_name": name}
        body = {"id": device_id, "site": "atomium", "adapter": "zigbee2mqtt", "config": config}
        answer = running.call("POST", "/api/v1/devices", json=body)
        assert answer.status_code == 201, answer.text
        mqtt: dict[str, Any] = answer.json()["mqtt"]
        return mqtt

    bridge = light("flood-1", "flood1")
    assert bridge["username"] == "z2m-belfry" and bridge["password"]
    assert wait_until(lambda: link.connections >= 2 and link.is_connected, DEADLINE)
    before = link.connections
    second = light("flood-2", "flood2")
    assert (second["username"], second["password"]) == ("z2m-belfry", None)
    with Probe(running.broker.port, "z2m-belfry", bridge["password"], "z2m-belfry") as p:
        assert p.connect()
        assert p.publish("belfry/bridge/state", b'{"state":"online"}', retain=True)
        for name in ("flood1", "flood2"):
            assert p.publish(f"belfry/{name}/availability", b'{"state":"online"}', retain=True)
        assert wait_until(
            lambda: running.online("flood-1") is True and running.online("flood-2") is True,
            DEADLINE,
        )
        assert not p.publish("wled/atomium/c", b"#FF0000")  # outside its base topic
        assert not p.publish(T.state("flood-1"), b"{}")
    assert link.connections == before


def test_a_device_under_a_prefix_the_controller_holds_leaves_its_role_alone(
    running: Running,
) -> None:
    """The operator gave the controller's role `wled/#` once (deploy/mosquitto/README.md):
    registering a WLED under it changes nothing, so the controller is never closed."""
    link = running.controller.broker
    assert isinstance(link, PahoBroker)
    admin = DynsecAccounts(running.broker.admin_address, T)
    for acltype in ("subscribePattern", "publishClientSend"):
        (reply,) = admin.run(
            [
                {
                    "command": "addRoleACL",
                    "rolename": CONTROLLER_USER,
                    "acltype": acltype,
                    "topic": "wled/#",
                    "priority": 0,
                    "allow": True,
                }
            ]
        )
        assert reply.error is None, reply.error
    assert wait_until(lambda: link.connections >= 2 and link.is_connected, DEADLINE)
    before = link.connections
    body = {"id": "strip", "site": "atomium", "adapter": "wled", "config": {"topic": "wled/a"}}
    answer = running.call("POST", "/api/v1/devices", json=body)
    assert answer.status_code == 201, answer.text
    mqtt = answer.json()["mqtt"]
    with Probe(running.broker.port, "strip", mqtt["password"], "strip") as p:
        assert p.connect()
        assert p.publish("wled/a/status", b"online", retain=True)
        assert wait_until(lambda: running.online("strip") is True, DEADLINE)
    assert link.connections == before


def test_what_a_device_said_at_qos_0_while_the_controller_was_away_reaches_it(
    running: Running,
) -> None:
    """Third-party devices report at QoS 0, which the broker does not keep for a session
    that is away. When the controller comes back (its session resumed), it subscribes to
    their topics again, and the broker sends what they hold retained."""
    link = running.controller.broker
    assert isinstance(link, PahoBroker)
    body = {"id": "strip", "site": "atomium", "adapter": "wled", "config": {"topic": "wled/b"}}
    answer = running.call("POST", "/api/v1/devices", json=body)
    assert answer.status_code == 201, answer.text
    password = answer.json()["mqtt"]["password"]
    assert wait_until(lambda: link.connections >= 2 and link.is_connected, DEADLINE)
    admin = DynsecAccounts(running.broker.admin_address, T)
    (off,) = admin.run([{"command": "disableClient", "username": CONTROLLER_USER}])
    assert off.error is None, off.error
    assert wait_until(lambda: not link.is_connected, DEADLINE)
    with Probe(running.broker.port, "strip", password, "strip") as p:
        assert p.connect()
        assert p.publish("wled/b/status", b"online", retain=True, qos=0)
    assert running.retained("wled/b/status") == b"online"  # the broker has it
    (on,) = admin.run([{"command": "enableClient", "username": CONTROLLER_USER}])
    assert on.error is None, on.error
    assert wait_until(lambda: link.is_connected, DEADLINE)
    assert link.session_resumed
    assert wait_until(lambda: running.online("strip") is True, DEADLINE)


def test_a_lights_answer_lost_while_the_controller_was_away_is_asked_for_again(
    running: Running,
) -> None:
    """A Zigbee light is sent its window's command; its answer (QoS 0, not retained)
    goes out while the controller is away, and is lost. Back, the controller asks it to
    report (`/get`), and its answer confirms the command."""
    link = running.controller.broker
    assert isinstance(link, PahoBroker)
    config = {"base_topic": "bay", "friendly_name": "flood"}
    body = {"id": "flood", "site": "atomium", "adapter": "zigbee2mqtt", "config": config}
    answer = running.call("POST", "/api/v1/devices", json=body)
    assert answer.status_code == 201, answer.text
    password = answer.json()["mqtt"]["password"]
    assert wait_until(lambda: link.connections >= 2 and link.is_connected, DEADLINE)
    outbox = running.controller.stores.outbox

    def state() -> CommandState | None:
        command = outbox.latest(["flood"]).get("flood")
        return None if command is None else command.state

    with Probe(running.broker.port, "z2m-bay", password, "z2m-bay") as bridge:
        assert bridge.connect()
        assert bridge.subscribe("bay/flood/set") and bridge.subscribe("bay/flood/get")
        assert bridge.publish("bay/flood/availability", b'{"state":"online"}', retain=True)
        assert wait_until(lambda: running.online("flood") is True, DEADLINE)
        now = datetime.now(UTC)
        running.controller.stores.campaigns.put(
            window_campaign(now - timedelta(minutes=1), now + timedelta(minutes=30)), now
        )
        running.controller.changed()

        def lit(ms: list[Any]) -> list[dict[str, Any]]:
            sets = (json.loads(m.payload) for m in ms if m.topic == "bay/flood/set")
            return [c for c in sets if c.get("state") == "ON"]

        command = lit(bridge.messages.wait_for(lambda ms: bool(lit(ms)), WAIT_S))[0]
        assert wait_until(lambda: state() is CommandState.PUBLISHED, DEADLINE)
        admin = DynsecAccounts(running.broker.admin_address, T)
        (off,) = admin.run([{"command": "disableClient", "username": CONTROLLER_USER}])
        assert off.error is None, off.error
        assert wait_until(lambda: not link.is_connected, DEADLINE)
        echo = {"state": "ON", "brightness": command["brightness"], "color": command["color"]}
        assert bridge.publish("bay/flood", json.dumps(echo).encode(), qos=0)  # lost
        asked_before = sum(1 for m in bridge.messages.items if m.topic == "bay/flood/get")
        (on,) = admin.run([{"command": "enableClient", "username": CONTROLLER_USER}])
        assert on.error is None, on.error
        assert wait_until(lambda: link.is_connected, DEADLINE)
        bridge.messages.wait_for(
            lambda ms: sum(1 for m in ms if m.topic == "bay/flood/get") > asked_before, WAIT_S
        )
        assert state() is CommandState.PUBLISHED  # nothing confirmed it meanwhile
        assert bridge.publish("bay/flood", json.dumps(echo).encode(), qos=0)  # the answer
        assert wait_until(lambda: state() is CommandState.APPLIED, DEADLINE)


def test_the_embedded_broker_takes_the_registrars_accounts(tmp_path: Path) -> None:
    """No dynsec, no operator: with the embedded broker the controller's own accounts
    are provisioned by the same routes."""
    settings = load_settings(None, data_dir=tmp_path, broker={"embedded_port": 0})
    controller = Controller(settings)
    try:
        controller.start()
        assert controller.broker is not None and controller.broker.wait_connected(DEADLINE)
        controller.stores.registry.import_catalog(SITES)
        token = controller.users.add("tom", "technician", ["brussels"], controller.clock())
        with serve(controller.web) as http:
            auth = {"Authorization": f"Bearer {token}"}
            body = {"id": "atomium-ctl", "site": "atomium"}
            answer = http.post("/api/v1/devices", json=body, headers=auth)
            assert answer.status_code == 201, answer.text
            mqtt = answer.json()["mqtt"]
            port = mqtt["port"]
            assert controller.embedded is not None and port == controller.embedded.port
            first = mqtt["password"]
            assert can_connect(port, "atomium-ctl", first, "atomium-ctl", mqtt311=True)
            rotated = http.post("/api/v1/devices/atomium-ctl/credentials", headers=auth)
            second = rotated.json()["mqtt"]["password"]
            assert not can_connect(port, "atomium-ctl", first, "atomium-ctl", mqtt311=True)
            assert can_connect(port, "atomium-ctl", second, "atomium-ctl", mqtt311=True)
            assert http.delete("/api/v1/devices/atomium-ctl", headers=auth).status_code == 200
            assert not can_connect(port, "atomium-ctl", second, "atomium-ctl", mqtt311=True)
    finally:
        controller.stop()
