"""One contract for every `Broker`: the in-memory double and the real one on Mosquitto.

Each implementation comes with a harness that does, its own way, what the world does to
a broker: acknowledge what is in flight, drop and restore the network, and have a device
send messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pytest

from controller.broker.base import Broker
from controller.broker.link import PahoBroker
from controller.broker.memory import MemoryBroker
from devices.connection import BrokerAddress
from devices.protocol import Topics
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto
from tests.support.peer import DEADLINE_S, Listener, Peer, Recorder, Sink
from tests.support.proxy import CuttableLink

TOPICS = Topics()
DEVICE = "contract-dev"
DEVICE_PASSWORD = "contract-pw"
STARTED = datetime(2025, 7, 30, 18, 0, tzinfo=UTC)


class Harness(Protocol):
    broker: Broker
    sink: Sink

    def settle(self) -> None:
        """Let the broker acknowledge what is in flight."""

    def drop(self) -> None:
        """The network goes."""

    def restore(self) -> None:
        """The network comes back (the broker reconnects by itself)."""

    def device_sends(self, messages: list[tuple[str, bytes]]) -> None:
        """The device publishes these, QoS 1, not retained, in this order."""


class MemoryHarness:
    def __init__(self) -> None:
        self.sink = Sink()
        self.memory = MemoryBroker(self.sink, echo={TOPICS.controller_barrier})
        self.broker: Broker = self.memory

    def settle(self) -> None:
        self.memory.ack()

    def drop(self) -> None:
        self.memory.disconnect()

    def restore(self) -> None:
        self.memory.connect()

    def device_sends(self, messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            self.memory.deliver(topic, payload)


class PahoHarness:
    def __init__(self, mosquitto: Mosquitto, link: CuttableLink) -> None:
        self.mosquitto = mosquitto
        self.link = link
        self.sink = Sink()
        address = BrokerAddress("127.0.0.1", link.port, False, CONTROLLER_USER, CONTROLLER_PASSWORD)
        self.broker: Broker = PahoBroker(address, TOPICS, "contract-controller", self.sink, STARTED)

    def settle(self) -> None:
        """Mosquitto acknowledges by itself."""

    def drop(self) -> None:
        self.link.cut()

    def restore(self) -> None:
        self.link.restore()

    def device_sends(self, messages: list[tuple[str, bytes]]) -> None:
        with Peer(self.mosquitto.port, DEVICE, DEVICE_PASSWORD) as device:
            device.publish_all((t, p, False) for t, p in messages)


@pytest.fixture(params=["memory", pytest.param("paho", marks=pytest.mark.broker)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "memory":
        memory = MemoryHarness()
        yield memory
        memory.broker.stop()
        return
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    mosquitto.add_users({DEVICE: DEVICE_PASSWORD})
    link = CuttableLink(mosquitto.port).start()
    paho = PahoHarness(mosquitto, link)
    try:
        yield paho
    finally:
        paho.broker.stop()
        link.stop()
        mosquitto.stop()


def started(h: Harness) -> Listener:
    listener = Listener()
    h.broker.add_listener(listener)
    h.broker.start()
    assert h.broker.wait_connected(DEADLINE_S)
    listener.wait("connected")
    assert h.broker.is_connected
    return listener


def test_done_is_called_once_with_true_when_the_broker_acknowledges(harness: Harness) -> None:
    started(harness)
    first, second = Recorder(), Recorder()
    assert harness.broker.publish(TOPICS.plan(DEVICE), b"v1", retain=True, done=first)
    harness.settle()
    assert first.wait_for(lambda calls: len(calls) >= 1) == [True]
    # a later acknowledgement is the barrier: by then a second call of the first
    # `done` would have happened
    assert harness.broker.publish(TOPICS.plan(DEVICE), b"v2", retain=True, done=second)
    harness.settle()
    assert second.wait_for(lambda calls: len(calls) >= 1) == [True]
    assert first.items == [True]


def test_publish_without_done_is_accepted(harness: Harness) -> None:
    started(harness)
    assert harness.broker.publish(TOPICS.plan(DEVICE), b"v1", retain=False)
    harness.settle()


def test_publish_while_disconnected_returns_false_and_never_completes(harness: Harness) -> None:
    listener = started(harness)
    harness.drop()
    listener.wait("disconnected")
    assert not harness.broker.is_connected
    refused = Recorder()
    assert harness.broker.publish(TOPICS.plan(DEVICE), b"lost", retain=True, done=refused) is False
    harness.restore()
    assert harness.broker.wait_connected(DEADLINE_S)
    later = Recorder()
    assert harness.broker.publish(TOPICS.plan(DEVICE), b"later", retain=True, done=later)
    harness.settle()
    assert later.wait_for(lambda calls: len(calls) >= 1) == [True]
    assert refused.items == []


def test_listeners_hear_every_connect_and_disconnect(harness: Harness) -> None:
    listener = started(harness)
    for round_ in range(1, 3):
        harness.drop()
        listener.wait("disconnected", times=round_)
        harness.restore()
        listener.wait("connected", times=round_ + 1)
        assert harness.broker.wait_connected(DEADLINE_S)
    assert listener.calls.items == ["connected", "disconnected"] * 2 + ["connected"]


def test_messages_reach_the_sink_in_arrival_order(harness: Harness) -> None:
    started(harness)
    topic = TOPICS.ack(DEVICE)
    payloads = [f'{{"n":{n}}}'.encode() for n in range(200)]
    harness.device_sends([(topic, p) for p in payloads])
    got = harness.sink.wait_count(len(payloads), lambda m: m.topic == topic)
    assert [m.payload for m in got] == payloads
    assert not any(m.retain for m in got)


def test_announce_is_sent_only_while_connected(harness: Harness) -> None:
    """A QoS 0 message (the clock beacon): refused while disconnected, taken at once
    when connected, with no completion to wait for."""
    assert not harness.broker.announce(TOPICS.controller_status, b"{}")
    listener = started(harness)
    assert harness.broker.announce(TOPICS.controller_status, b"{}")
    harness.drop()
    listener.wait("disconnected")
    assert not harness.broker.announce(TOPICS.controller_status, b"{}")


def test_a_barrier_comes_back_after_what_reached_the_broker_before_it(harness: Harness) -> None:
    """The catch-up barrier (controller/barrier.py): published by the controller to its
    own topic, it reaches the sink after every message the broker had before it."""
    started(harness)
    topic = TOPICS.ack(DEVICE)
    payloads = [f'{{"n":{n}}}'.encode() for n in range(200)]
    harness.device_sends([(topic, p) for p in payloads])
    assert harness.broker.publish(TOPICS.controller_barrier, b"barrier", retain=False)
    harness.settle()
    got = harness.sink.wait_count(1, lambda m: m.topic == TOPICS.controller_barrier)
    assert [m.payload for m in got] == [b"barrier"]
    order = [m.topic for m in harness.sink.items]
    assert order.index(TOPICS.controller_barrier) == len(payloads), order[-3:]
    assert [m.payload for m in harness.sink.on(topic)] == payloads


@pytest.mark.broker
def test_a_vendor_topic_dropped_while_away_is_not_heard_after_a_resumed_session(
    tmp_path: Path,
) -> None:
    """On a reconnection the link subscribes to the followed vendor topics again (their
    retained messages come anew); a topic no longer followed is unsubscribed, even
    though the resumed session still held it."""
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    mosquitto.add_users({"emulator-wled": "wled-pw"})
    link = CuttableLink(mosquitto.port).start()
    h = PahoHarness(mosquitto, link)
    kept, gone = "wled/kept/g", "wled/gone/g"

    def send(payload: bytes) -> None:
        with Peer(mosquitto.port, "emulator-wled", "wled-pw") as device:
            device.publish_all([(gone, payload, False), (kept, payload, False)])

    try:
        listener = started(h)
        h.broker.follow([kept, gone])
        deadline = time.monotonic() + DEADLINE_S
        while not (h.sink.on(kept) and h.sink.on(gone)) and time.monotonic() < deadline:
            send(b"1")  # until the SUBSCRIBE is in: then both arrive
            time.sleep(0.2)
        assert h.sink.on(kept) and h.sink.on(gone)
        h.drop()
        listener.wait("disconnected")
        h.broker.follow([kept])  # the device behind `gone` was decommissioned meanwhile
        h.restore()
        listener.wait("connected", times=2)
        assert isinstance(h.broker, PahoBroker) and h.broker.session_resumed
        before = len(h.sink.on(kept))
        while len(h.sink.on(kept)) == before and time.monotonic() < deadline + DEADLINE_S:
            send(b"2")  # `kept` again (after the reconnection's SUBSCRIBE) proves the
            time.sleep(0.2)  # UNSUBSCRIBE before it is done too: they go in order
        assert [m.payload for m in h.sink.on(kept)][-1] == b"2"
        send(b"3")  # one round more, well after the reconnection's packets went out
        h.sink.wait_count(1, lambda m: m.topic == kept and m.payload == b"3")
        assert not [m for m in h.sink.on(gone) if m.payload == b"3"]
    finally:
        h.broker.stop()
        link.stop()
        mosquitto.stop()
