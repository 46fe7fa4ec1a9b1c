"""The default `illuminate serve` (embedded broker) as a user runs it, asked by paho clients:
no anonymous client, no made-up login; a device logs in with the account registered in
the same data folder by another process; the controller itself is logged in."""

from __future__ import annotations

import queue
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from controller.broker.local_accounts import LocalAccounts
from devices.protocol import Topics
from tests.support.mosquitto import free_port

pytestmark = pytest.mark.broker

GENEROUS_S = 30.0
ILLUMINATE = str(Path(sys.executable).with_name("illuminate"))


@dataclass
class Served:
    http: httpx.Client
    mqtt_port: int
    data_dir: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir, port, mqtt_port = tmp_path / "data", free_port(), free_port()
    config = tmp_path / "illuminate.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n[http]\nport = {port}\n[broker]\nembedded_port = {mqtt_port}\n'
    )
    proc = subprocess.Popen(
        [ILLUMINATE, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=GENEROUS_S) as http:
            deadline = time.monotonic() + GENEROUS_S
            while True:
                assert proc.poll() is None, "illuminate serve exited"
                assert time.monotonic() < deadline, "illuminate serve did not become ready"
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            yield Served(http, mqtt_port, data_dir)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=GENEROUS_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=GENEROUS_S)


def connack(port: int, client_id: str, login: tuple[str, str] | None) -> ReasonCode:
    """The broker's answer to one MQTT 3.1.1 CONNECT (the embedded broker's version)."""
    codes: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv311)
    if login is not None:
        client.username_pw_set(*login)
    client.on_connect = lambda _c, _u, _f, code, _p: codes.put(code)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        return codes.get(timeout=GENEROUS_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_default_serve_refuses_an_anonymous_mqtt_client(served: Served) -> None:
    # the controller logged in to its own broker with its generated credentials
    assert served.http.get("/readyz").json()["checks"]["broker"] is True
    port = served.mqtt_port
    assert connack(port, "anyone", None).getName() == "Not authorized"
    assert connack(port, "dev-x", ("dev-x", "guess")).getName() == "Not authorized"
    assert connack(port, "illuminate-controller", None).getName() == "Not authorized"
    guess = ("illuminate-controller", "illuminate-controller")
    assert connack(port, "illuminate-controller", guess).getName() == "Not authorized"

    # a device registered meanwhile by another process logs in with its own account
    accounts = LocalAccounts.in_folder(served.data_dir, Topics())
    accounts.create("dev-x", "its-own-secret")
    assert not connack(port, "dev-x", ("dev-x", "its-own-secret")).is_failure
    assert connack(port, "dev-y", ("dev-x", "its-own-secret")).getName() == "Not authorized"
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    # the refused logins with the controller's client id left the controller connected
    assert served.http.get("/readyz").json()["checks"]["broker"] is True
