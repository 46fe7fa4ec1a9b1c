"""Bad device input is logged and counted, and the controller carries on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.lifecycle import CommandState
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign

pytestmark = pytest.mark.broker

T = "2026-07-30T19:30:00Z"


def _device_client(port: int, user: str, password: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{user}")
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _ack(version: int, stage: str = "received", **extra: object) -> bytes:
    return json.dumps({"v": 1, "version": version, "stage": stage, **extra}).encode()


@pytest.fixture
def running(rig_factory, mosquitto):
    """A controller with two registered devices (no agents), one plan each."""
    rig = rig_factory(2)
    rig.start_controller()
    opens = whole_second(3600)
    rig.register(window_campaign(opens, opens + timedelta(minutes=10)))
    assert wait_until(lambda: len(rig.controller.stores.outbox.latest()) == 2, timeout=DEADLINE)
    mosquitto.add_users({"stranger": "pw-stranger"})
    clients: list[mqtt.Client] = []

    def client(user: str, password: str) -> mqtt.Client:
        c = _device_client(mosquitto.port, user, password)
        clients.append(c)
        return c

    yield rig, client
    for c in clients:
        c.loop_stop()
        c.disconnect()


CASES = [
    ("not_json", b"{not json"),
    ("not_json", b"\xff\xfe\x00garbage"),
    ("wrong_version", json.dumps({"v": 2, "version": 1, "stage": "received"}).encode()),
    ("unknown_stage", _ack(1, "exploded")),
    ("oversized", json.dumps({"v": 1, "pad": "x" * 70_000}).encode()),
    ("device_mismatch", _ack(1, device="dev-02")),
    ("unknown_version", _ack(999)),
    ("invalid", _ack(1, "applied")),  # applied without step_at/applied_at/state
]


@pytest.mark.parametrize(
    ("reason", "payload"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)]
)
def test_bad_ack_is_counted_and_the_controller_carries_on(running, reason, payload):
    rig, client = running
    metrics = rig.controller.metrics
    before = metrics.rejected(reason)
    dev = client("dev-01", "pw-01")
    topic = "illuminate/v1/devices/dev-01/ack"
    dev.publish(topic, payload, qos=1).wait_for_publish(5)
    assert wait_until(lambda: metrics.rejected(reason) == before + 1, timeout=DEADLINE)
    row = rig.controller.stores.outbox.latest()["dev-01"]
    assert row.state in {CommandState.PENDING.value, CommandState.PUBLISHED.value}

    # the very next good message is still handled
    dev.publish(topic, _ack(row.version, "received", device="dev-01"), qos=1).wait_for_publish(5)
    assert wait_until(
        lambda: rig.controller.stores.outbox.latest()["dev-01"].state == "received",
        timeout=DEADLINE,
    )


def test_message_from_unregistered_device_is_ignored(running):
    rig, client = running
    metrics = rig.controller.metrics
    before = metrics.rejected("unregistered")
    stranger = client("stranger", "pw-stranger")
    stranger.publish(
        "illuminate/v1/devices/stranger/status", b'{"v":1,"online":true}', qos=1, retain=True
    ).wait_for_publish(5)
    assert wait_until(lambda: metrics.rejected("unregistered") == before + 1, timeout=DEADLINE)
    assert "stranger" not in {d.id for d in rig.controller.stores.reports.views().values()}


def test_status_and_state_bodies_are_checked_too(running):
    rig, client = running
    metrics = rig.controller.metrics
    dev = client("dev-02", "pw-02")
    before = metrics.rejected("device_mismatch")
    dev.publish(
        "illuminate/v1/devices/dev-02/status", b'{"v":1,"online":true,"device":"dev-01"}', qos=1
    ).wait_for_publish(5)
    assert wait_until(lambda: metrics.rejected("device_mismatch") == before + 1, timeout=DEADLINE)
    assert (
        next(d for d in rig.controller.stores.reports.views().values() if d.id == "dev-01").online
        is None
    )

    dev.publish(
        "illuminate/v1/devices/dev-02/status", b'{"v":1,"online":true}', qos=1
    ).wait_for_publish(5)
    assert wait_until(
        lambda: (
            next(
                d for d in rig.controller.stores.reports.views().values() if d.id == "dev-02"
            ).online
        ),
        timeout=DEADLINE,
    )
    now = datetime.now(UTC).isoformat()
    state = {"v": 1, "state": {"on": False}, "reported_at": now}
    dev.publish(
        "illuminate/v1/devices/dev-02/state", json.dumps(state).encode(), qos=1
    ).wait_for_publish(5)
    assert wait_until(lambda: metrics.accepted("state") >= 1, timeout=DEADLINE)
