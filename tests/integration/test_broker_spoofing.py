"""A device with its own valid credentials tries to fake or knock out another device,
on a real Mosquitto with the dynamic-security plugin; devices are provisioned through
`DynsecAccounts`, as the registry does.

Refusals are read from the broker's MQTT 5 reason codes. "Nothing arrived" is made
deterministic by a barrier: a later message from a legitimate sender, which the broker
routes after everything it acknowledged before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.broker.base import Incoming
from controller.broker.dynsec import DynsecAccounts
from devices.protocol import Kind, Topics
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto
from tests.support.mqtt5 import WAIT_S, Probe, can_connect

pytestmark = pytest.mark.broker

T = Topics()
FORGED = b"forged-by-dev-a"
BIRTH = b'{"online":true}'
WILL = b'{"online":false}'


@dataclass
class Fleet:
    broker: Mosquitto
    accounts: DynsecAccounts
    controller: Probe
    victim: Probe

    def device(self, device_id: str, password: str, **kw: object) -> Probe:
        return Probe(self.broker.port, device_id, password, device_id, **kw)  # type: ignore[arg-type]

    def barrier(self, probe: Probe, sender: Probe, topic: str, marker: bytes) -> list[Incoming]:
        """`sender` publishes `marker` (retained) on `topic`; wait until `probe` has it.
        Everything the broker acknowledged before is then already delivered to `probe`."""
        assert sender.publish(topic, marker, retain=True)
        return probe.messages.wait_for(
            lambda xs: any(m.topic == topic and m.payload == marker for m in xs), WAIT_S
        )


@pytest.fixture
def fleet(dynsec_mosquitto: Mosquitto) -> Iterator[Fleet]:
    accounts = DynsecAccounts(dynsec_mosquitto.admin_address, T)
    accounts.create("dev-a", "secret-a")
    accounts.create("dev-b", "secret-b")
    port = dynsec_mosquitto.port
    controller = Probe(port, CONTROLLER_USER, CONTROLLER_PASSWORD, CONTROLLER_USER)
    victim = Probe(port, "dev-b", "secret-b", "dev-b", will=(T.status("dev-b"), WILL))
    try:
        assert controller.connect()
        assert controller.subscribe(f"{T.root}/#")
        assert controller.publish(T.controller_status, b'{"online":true}', retain=True)
        assert controller.publish(T.plan("dev-b"), b'{"plan":"for-b","n":1}', retain=True)
        assert controller.publish(T.plan("dev-a"), b'{"plan":"for-a","n":1}', retain=True)
        assert victim.connect()
        assert victim.publish(T.status("dev-b"), BIRTH, retain=True)
        assert victim.subscribe(T.plan("dev-b"))
        assert victim.subscribe(T.controller_status)
        yield Fleet(dynsec_mosquitto, accounts, controller, victim)
    finally:
        victim.close()
        controller.close()


def test_a_device_cannot_fake_or_knock_out_another(fleet: Fleet) -> None:
    port = fleet.broker.port
    with fleet.device("dev-a", "secret-a") as attacker:
        assert attacker.connect()
        # forged messages on B's topics: every one refused by the broker
        applied = b'{"v":1,"version":1,"stage":"applied","note":"' + FORGED + b'"}'
        assert not attacker.publish(T.ack("dev-b"), applied)
        assert not attacker.publish(T.state("dev-b"), FORGED, retain=True)
        assert not attacker.publish(T.status("dev-b"), WILL, retain=True)
        assert not attacker.publish(T.plan("dev-b"), FORGED, retain=True)
        assert not attacker.publish(T.controller_status, FORGED, retain=True)
        # reading anything but its own plan and the controller status: refused
        for topic_filter in ("#", "+/plan", T.device_filter(Kind.PLAN), T.plan("dev-b")):
            assert not attacker.subscribe(topic_filter), topic_filter
        assert attacker.subscribe(T.plan("dev-a"))
        assert attacker.subscribe(T.controller_status)

        # logins as B: with B's username (A's password), and with B's client id while
        # B is online (A's own username and password; MQTT 5 and 3.1.1 alike)
        assert not can_connect(port, "dev-b", "secret-a", "dev-b")
        assert not can_connect(port, "dev-a", "secret-a", "dev-b")
        assert not can_connect(port, "dev-a", "secret-a", "dev-b", mqtt311=True)
        assert not can_connect(port, "dev-b", "secret-a", "dev-b", mqtt311=True)

        # barriers: the controller publishes B's plan, then A's; B reports its state
        assert fleet.controller.publish(T.plan("dev-b"), b'{"plan":"for-b","n":2}', retain=True)
        got_a = fleet.barrier(
            attacker, fleet.controller, T.plan("dev-a"), b'{"plan":"for-a","n":2}'
        )
        seen = fleet.barrier(fleet.controller, fleet.victim, T.state("dev-b"), b'{"b":"real"}')
        got_b = fleet.victim.messages.wait_for(
            lambda xs: any(m.payload == b'{"plan":"for-b","n":2}' for m in xs), WAIT_S
        )

    # A received only its own plan and the controller status
    assert {m.topic for m in got_a} == {T.plan("dev-a"), T.controller_status}
    # the controller never saw A's forgeries, on B's topics or anywhere
    assert not [m for m in seen if FORGED in m.payload or b"applied" in m.payload]
    assert [m.payload for m in seen if m.topic == T.status("dev-b")] == [BIRTH]
    # B was never kicked: still connected, its will never published, still receiving
    assert fleet.victim.is_connected
    assert fleet.victim.disconnects.items == []
    assert any(m.payload == b'{"plan":"for-b","n":2}' for m in got_b)
    # and nothing forged was retained: a fresh subscriber gets B's real retained state
    with Probe(port, CONTROLLER_USER, CONTROLLER_PASSWORD, CONTROLLER_USER) as fresh:
        # the controller's id is bound too: this second login takes the observer's
        # place, as the controller's own reconnect would; subscribe to B's topics
        assert fresh.connect()
        assert fresh.subscribe(f"{T.root}/devices/dev-b/#")
        retained = fresh.messages.wait_for(
            lambda xs: (
                {T.state("dev-b"), T.status("dev-b"), T.plan("dev-b")} <= {m.topic for m in xs}
            ),
            WAIT_S,
        )
    by_topic = {m.topic: m.payload for m in retained}
    assert by_topic[T.state("dev-b")] == b'{"b":"real"}'
    assert by_topic[T.status("dev-b")] == BIRTH
    assert by_topic[T.plan("dev-b")] == b'{"plan":"for-b","n":2}'


def test_rotation_closes_the_old_password_at_once(fleet: Fleet) -> None:
    port = fleet.broker.port
    fleet.accounts.rotate("dev-b", "secret-b2")
    # the connection made with the old password is closed by the broker (without its
    # will: the plugin kicks without it, so the retained status still says online)
    fleet.victim.disconnects.wait_for(lambda xs: len(xs) >= 1, WAIT_S)
    assert not can_connect(port, "dev-b", "secret-b", "dev-b")
    assert not can_connect(port, "dev-b", "secret-b", "dev-b", mqtt311=True)
    with fleet.device("dev-b", "secret-b2") as renewed:
        assert renewed.connect()
        assert renewed.publish(T.ack("dev-b"), b"{}")
    # the other device is untouched
    assert can_connect(port, "dev-a", "secret-a", "dev-a")


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_a_decommissioned_device_cannot_connect(fleet: Fleet, how: str) -> None:
    port = fleet.broker.port
    if how == "delete":
        assert fleet.accounts.delete("dev-b")
        assert not fleet.accounts.exists("dev-b")
    else:
        fleet.accounts.disable("dev-b")
    fleet.victim.disconnects.wait_for(lambda xs: len(xs) >= 1, WAIT_S)
    assert not can_connect(port, "dev-b", "secret-b", "dev-b")
    assert not can_connect(port, "dev-b", "secret-b", "dev-b", mqtt311=True)
    assert can_connect(port, "dev-a", "secret-a", "dev-a")


def test_accounts_survive_a_broker_restart(fleet: Fleet) -> None:
    """The plugin keeps its own file: a restarted broker still knows every device, and
    still refuses the old password of a rotated one."""
    fleet.accounts.rotate("dev-a", "secret-a2")
    fleet.victim.close()
    fleet.controller.close()
    fleet.broker.restart()
    port = fleet.broker.port
    assert can_connect(port, "dev-b", "secret-b", "dev-b")
    assert can_connect(port, "dev-a", "secret-a2", "dev-a")
    assert not can_connect(port, "dev-a", "secret-a", "dev-a")
    assert not can_connect(port, "dev-a", "secret-a2", "dev-b")
