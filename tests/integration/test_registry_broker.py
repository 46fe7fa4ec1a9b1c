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
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app import Controller
from controller.broker.dynsec import DynsecAccounts
from controller.settings import load_settings
from devices.protocol import Topics
from schedules.model import SiteCatalog
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until
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
