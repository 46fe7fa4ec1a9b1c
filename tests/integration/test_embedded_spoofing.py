"""A device with its own valid credentials tries to fake or knock out another device, on
the embedded broker of a real controller: the cases of test_broker_spoofing.py (which runs
them on Mosquitto), judged by what the controller concludes.

Device B is connected, born and holds its plan for an open window, but never confirms
it, so only a forgery could make it `lit`. Device A logs in with its own account and
forges, as well as it can (B's real plan version and step): an `applied` ack on B's ack
topic, a matching retained state on B's state topic and an offline status on B's status
topic; it subscribes to `#`, `+/plan` and B's plan; it logs in with B's username and with
B's client id while B is online, with a will on B's status too.

MQTT 3.1.1 (the embedded broker's) acknowledges a refused publish like an accepted one,
so "nothing got through" is made deterministic by barriers: A's own state report, which
the broker routes after everything A sent before, reaching the controller; and B's and
A's plans published again, reaching them after anything routed to them before.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from controller.app import Controller
from controller.public import public_status
from controller.registration import hash_generated_secret
from controller.store.base import NewDevice
from devices.protocol import Ack, DeviceState, DeviceStatus, Kind, LightState, Stage, Topics
from tests.integration.conftest import (
    DEADLINE,
    catalog,
    make_settings,
    wait_until,
    whole_second,
    window_campaign,
)
from tests.support.mqtt5 import WAIT_S, Probe

pytestmark = pytest.mark.broker

T = Topics()
PASSWORDS = {"dev-a": "secret-a", "dev-b": "secret-b"}
SITES = {"dev-a": "site-01", "dev-b": "site-02"}


def probe(port: int, username: str, password: str, client_id: str, **kw: object) -> Probe:
    return Probe(port, username, password, client_id, mqtt311=True, **kw)  # type: ignore[arg-type]


def refused(port: int, username: str, password: str, client_id: str, **kw: object) -> bool:
    with probe(port, username, password, client_id, **kw) as p:
        return not p.connect()


def refused_persistent(port: int, username: str, password: str, client_id: str) -> bool:
    """A CONNECT with clean_session=False (amqtt then reuses the session of that id)."""
    codes: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id, clean_session=False, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, code, _p: codes.put(code)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        return bool(codes.get(timeout=WAIT_S).is_failure)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class World:
    controller: Controller
    port: int
    victim: Probe

    def site_state(self, device_id: str) -> str:
        c = self.controller
        status = public_status(c.stores.snapshot(), datetime.now(UTC), c.grace, timedelta(hours=24))
        return next(s.state.value for s in status.sites if s.id == SITES[device_id])

    def online(self, device_id: str) -> bool | None:
        return self.controller.stores.reports.views()[device_id].online


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    controller = Controller(make_settings(tmp_path, None))
    controller.start()
    victim: Probe | None = None
    try:
        now = datetime.now(UTC)
        stores = controller.stores
        stores.registry.import_catalog(catalog(2))
        stores.registry.add_devices(
            [NewDevice(d, SITES[d], hash_generated_secret(p)) for d, p in PASSWORDS.items()],
            now,
        )
        assert controller.accounts is not None
        for device_id, password in PASSWORDS.items():
            controller.accounts.create(device_id, password)
        opens = whole_second(1)
        stores.campaigns.put(window_campaign(opens, opens + timedelta(minutes=10)), now)
        controller.changed()
        assert controller.embedded is not None
        port = controller.embedded.port
        born = DeviceStatus(online=True, since=now).model_dump_json().encode()
        will = DeviceStatus(online=False).model_dump_json().encode()
        victim = probe(port, "dev-b", PASSWORDS["dev-b"], "dev-b", will=(T.status("dev-b"), will))
        assert victim.connect()
        assert victim.subscribe(T.plan("dev-b"))
        assert victim.subscribe(T.controller_status)
        assert victim.publish(T.status("dev-b"), born, retain=True)
        world = World(controller, port, victim)
        assert wait_until(lambda: world.online("dev-b") is True, DEADLINE)
        # B holds its plan for the open window, and does not confirm it
        victim.messages.wait_for(lambda xs: any(m.topic == T.plan("dev-b") for m in xs), DEADLINE)
        yield world
    finally:
        if victim is not None:
            victim.close()
        controller.stop()


def forgeries(world: World) -> list[tuple[str, bytes]]:
    """What A sends on B's topics: the best forgery it can make, with B's real plan."""
    command = world.controller.stores.outbox.latest()["dev-b"]
    plan = command.plan
    step = plan.step_at(datetime.now(UTC) + timedelta(seconds=5))
    assert step is not None and step.state.on, "B's plan turns the light on"
    now = datetime.now(UTC)
    applied = Ack(
        version=plan.version,
        stage=Stage.APPLIED,
        step_at=step.at,
        applied_at=max(now, step.at),
        state=step.state,
    )
    state = DeviceState(
        state=step.state, plan_version=plan.version, step_at=step.at, reported_at=now
    )
    offline = DeviceStatus(online=False)
    return [
        (T.ack("dev-b"), applied.model_dump_json().encode()),
        (T.state("dev-b"), state.model_dump_json().encode()),
        (T.status("dev-b"), offline.model_dump_json().encode()),
        (T.plan("dev-b"), plan.model_dump_json().encode()),
    ]


def test_a_device_cannot_fake_or_knock_out_another_on_the_embedded_broker(world: World) -> None:
    port, a_pw = world.port, PASSWORDS["dev-a"]
    assert wait_until(lambda: world.controller.stores.outbox.latest().get("dev-a"), DEADLINE)
    with probe(port, "dev-a", a_pw, "dev-a") as attacker:
        assert attacker.connect()
        # reading anything but its own plan and the controller status: refused
        for topic_filter in ("#", "+/plan", T.device_filter(Kind.PLAN), T.plan("dev-b")):
            assert not attacker.subscribe(topic_filter), topic_filter
        assert attacker.subscribe(T.plan("dev-a"))
        assert attacker.subscribe(T.controller_status)

        # forged messages on B's topics, retained where B's are
        for topic, body in forgeries(world):
            assert attacker.publish(topic, body, retain=not topic.endswith("/ack"))

        # logins as B: B's username with A's password; B's client id while B is online
        # (clean and persistent sessions); a will on B's status
        assert refused(port, "dev-b", a_pw, "dev-b")
        assert refused(port, "dev-a", a_pw, "dev-b")
        assert refused_persistent(port, "dev-a", a_pw, "dev-b")
        assert refused(port, "dev-a", a_pw, "dev-a", will=(T.status("dev-b"), b'{"online":false}'))
        assert refused(port, "", "", "dev-b"), "anonymous, with B's client id"

        # barrier 1: A's own state reaches the controller after all A sent before
        mine = DeviceState(state=LightState(on=False), reported_at=datetime.now(UTC))
        assert attacker.publish(T.state("dev-a"), mine.model_dump_json().encode(), retain=True)
        views = world.controller.stores.reports.views
        assert wait_until(lambda: views()["dev-a"].reported_at is not None, DEADLINE)

        # barrier 2: B's and A's plans again reach them after anything routed before
        before_b = len(world.victim.messages.on(T.plan("dev-b")))
        before_a = len(attacker.messages.on(T.plan("dev-a")))
        link, latest = world.controller.broker, world.controller.stores.outbox.latest()
        assert link is not None
        for device_id in ("dev-b", "dev-a"):
            payload = latest[device_id].payload.encode()
            assert link.publish(T.plan(device_id), payload, retain=True, done=lambda _ok: None)
        world.victim.messages.wait_for(
            lambda xs: sum(m.topic == T.plan("dev-b") for m in xs) > before_b, DEADLINE
        )
        got_a = attacker.messages.wait_for(
            lambda xs: sum(m.topic == T.plan("dev-a") for m in xs) > before_a, DEADLINE
        )

    # A received only its own plan and the controller status
    assert {m.topic for m in got_a} == {T.plan("dev-a"), T.controller_status}
    # B never became lit, nor offline: the controller saw none of A's forgeries
    latest = world.controller.stores.outbox.latest()["dev-b"]
    assert latest.state.value != "applied"
    assert world.site_state("dev-b") not in ("lit", "offline")
    assert world.online("dev-b") is True
    assert world.controller.stores.reports.views()["dev-b"].reported_state is None
    # B was never kicked, and still receives its plan (barrier 2)
    assert world.victim.is_connected
    assert world.victim.disconnects.items == []
    # and nothing forged was retained: a fresh login of B gets its real plan, no state
    world.victim.close()
    with probe(port, "dev-b", PASSWORDS["dev-b"], "dev-b") as again:
        assert again.connect()
        assert again.subscribe(T.plan("dev-b"))
        got = again.messages.wait_for(lambda xs: any(m.topic == T.plan("dev-b") for m in xs))
    plan = next(m for m in got if m.topic == T.plan("dev-b"))
    assert plan.payload == latest.payload.encode()


def test_a_changed_account_closes_its_connection(world: World) -> None:
    """Rotating B's password closes the connection made with the old one; deleting A's
    account closes A's. Neither can log in with what it had."""
    accounts = world.controller.accounts
    assert accounts is not None
    port = world.port
    with probe(port, "dev-a", PASSWORDS["dev-a"], "dev-a") as a:
        assert a.connect()
        accounts.rotate("dev-b", "secret-b2")
        world.victim.disconnects.wait_for(lambda xs: len(xs) >= 1, DEADLINE)
        assert refused(port, "dev-b", PASSWORDS["dev-b"], "dev-b")
        assert not refused(port, "dev-b", "secret-b2", "dev-b")
        assert a.is_connected, "the other device is untouched"
        assert accounts.delete("dev-a")
        a.disconnects.wait_for(lambda xs: len(xs) >= 1, DEADLINE)
        assert refused(port, "dev-a", PASSWORDS["dev-a"], "dev-a")
