"""The embedded amqtt broker, exercised with real paho-mqtt 2.x clients.

These are tests of its MQTT behaviour, on `OpenGate` (any client logged in as itself);
its security is tested on the product's gate in test_embedded_broker_security.py."""

from __future__ import annotations

import os
import queue
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from controller.broker import embedded
from controller.broker.embedded import EmbeddedBroker
from tests.support.gates import OPEN_PASSWORD, OpenGate

pytestmark = pytest.mark.broker

TIMEOUT = 5.0


class Client:
    """A paho client with a background loop, a CONNACK wait and a message queue."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.reason_code: ReasonCode | None = None
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        self.paho.username_pw_set(
            client_id if username is None else username,
            OPEN_PASSWORD if password is None else password,
        )
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.on_subscribe = lambda *_args: self.subscribed.set()
        self.port = port

    def _on_connect(self, _c, _u, _flags, reason_code, _props) -> None:
        self.reason_code = reason_code
        self.connected.set()

    def connect(self) -> Client:
        self.paho.connect("127.0.0.1", self.port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert self.reason_code is not None and not self.reason_code.is_failure
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.clear()
        self.paho.subscribe(topic, qos=qos)
        assert self.subscribed.wait(TIMEOUT), "no SUBACK"

    def next_message(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no message within timeout") from None

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@contextmanager
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    try:
        yield made
    finally:
        for client in made:
            client.close()


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(port=0, gate=OpenGate())
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_port_zero_gets_a_free_loopback_port(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.port > 0
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT):
        pass


def test_binds_only_loopback(broker: EmbeddedBroker) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
        own_ip = probe.getsockname()[0]
    except OSError:
        pytest.skip("no non-loopback IPv4 address to test against")
    finally:
        probe.close()
    if own_ip.startswith("127.") or own_ip == "0.0.0.0":
        pytest.skip("no non-loopback IPv4 address to test against")
    with pytest.raises(OSError), socket.create_connection((own_ip, broker.port), timeout=TIMEOUT):
        pass


def test_qos1_publish_is_acknowledged(broker: EmbeddedBroker) -> None:
    with clients() as made:
        sub = Client(broker.port, "t-sub")
        made.append(sub.connect())
        sub.subscribe("illuminate/test/qos1", qos=1)
        pub = Client(broker.port, "t-pub")
        made.append(pub.connect())
        info = pub.paho.publish("illuminate/test/qos1", b"on", qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()
        msg = sub.next_message()
        assert (msg.topic, msg.payload, msg.qos) == ("illuminate/test/qos1", b"on", 1)


def test_a_login_the_gate_refuses_gets_connack_not_authorized(broker: EmbeddedBroker) -> None:
    for username, password in (("someone", OPEN_PASSWORD), ("t-user", "wrong")):
        refused = Client(broker.port, "t-user", username=username, password=password)
        refused.paho.connect("127.0.0.1", broker.port, keepalive=30)
        refused.paho.loop_start()
        try:
            assert refused.connected.wait(TIMEOUT), "no CONNACK"
            assert refused.reason_code is not None
            assert refused.reason_code.getName() == "Not authorized"
        finally:
            refused.close()
    anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, "t-anon", protocol=mqtt.MQTTv311)
    codes: queue.Queue[ReasonCode] = queue.Queue()
    anonymous.on_connect = lambda _c, _u, _f, code, _p: codes.put(code)
    anonymous.connect("127.0.0.1", broker.port, keepalive=30)
    anonymous.loop_start()
    try:
        assert codes.get(timeout=TIMEOUT).getName() == "Not authorized"
    finally:
        anonymous.disconnect()
        anonymous.loop_stop()


def test_retained_message_reaches_later_subscriber(broker: EmbeddedBroker) -> None:
    with clients() as made:
        pub = Client(broker.port, "t-retain-pub")
        made.append(pub.connect())
        pub.paho.publish("illuminate/test/state", b"lit", qos=1, retain=True).wait_for_publish(
            timeout=TIMEOUT
        )
        sub = Client(broker.port, "t-retain-sub")
        made.append(sub.connect())
        sub.subscribe("illuminate/test/#", qos=1)
        msg = sub.next_message()
        assert (msg.topic, msg.payload, msg.retain) == ("illuminate/test/state", b"lit", True)

        # an empty retained payload clears it
        pub.paho.publish("illuminate/test/state", b"", qos=1, retain=True).wait_for_publish(
            timeout=TIMEOUT
        )
        late = Client(broker.port, "t-retain-late")
        made.append(late.connect())
        late.subscribe("illuminate/test/#", qos=1)
        with pytest.raises(queue.Empty):
            late.messages.get(timeout=0.5)


_WILL_CHILD = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt

    port = int(sys.argv[1])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-will", protocol=mqtt.MQTTv311)
    c.username_pw_set("t-will", sys.argv[2])
    c.will_set("illuminate/test/will", b"gone", qos=1, retain=True)
    c.on_connect = lambda *a: print("connected", flush=True)
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    time.sleep(60)
    """
)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "child printed nothing"
    return proc.stdout.readline()


def test_last_will_is_sent_and_retained_on_abrupt_disconnect(broker: EmbeddedBroker) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WILL_CHILD, str(broker.port), OPEN_PASSWORD],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        with clients() as made:
            watcher = Client(broker.port, "t-will-watcher")
            made.append(watcher.connect())
            watcher.subscribe("illuminate/test/will", qos=1)
            assert _read_line(proc, TIMEOUT) == b"connected\n"
            proc.kill()  # no DISCONNECT: the kernel closes the socket
            proc.wait(timeout=TIMEOUT)

            msg = watcher.next_message()
            assert (msg.topic, msg.payload) == ("illuminate/test/will", b"gone")

            late = Client(broker.port, "t-will-late")
            made.append(late.connect())
            late.subscribe("illuminate/test/will", qos=1)
            msg = late.next_message()
            assert (msg.payload, msg.retain) == (b"gone", True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def test_no_will_on_clean_disconnect(broker: EmbeddedBroker) -> None:
    with clients() as made:
        watcher = Client(broker.port, "t-nowill-watcher")
        made.append(watcher.connect())
        watcher.subscribe("illuminate/test/nowill", qos=1)
        leaver = Client(broker.port, "t-nowill")
        leaver.paho.will_set("illuminate/test/nowill", b"gone", qos=1)
        leaver.connect()
        leaver.close()
        with pytest.raises(queue.Empty):
            watcher.messages.get(timeout=0.5)


def test_persistent_session_gets_queued_qos1_on_reconnect(broker: EmbeddedBroker) -> None:
    with clients() as made:
        device = Client(broker.port, "t-persistent", clean_session=False)
        device.connect()
        device.subscribe("illuminate/test/cmd", qos=1)
        device.close()

        pub = Client(broker.port, "t-persistent-pub")
        made.append(pub.connect())
        pub.paho.publish("illuminate/test/cmd", b"queued", qos=1).wait_for_publish(timeout=TIMEOUT)

        again = Client(broker.port, "t-persistent", clean_session=False)
        made.append(again.connect())
        msg = again.next_message()
        assert (msg.topic, msg.payload) == ("illuminate/test/cmd", b"queued")


def test_stop_then_start_again_on_a_new_port() -> None:
    b = EmbeddedBroker(port=0, gate=OpenGate())
    try:
        b.start()
        first = b.port
        b.stop()
        assert not b.running
        b.start()
        assert b.port != first or b.running
        with clients() as made:
            c = Client(b.port, "t-restart")
            made.append(c.connect())
            c.paho.publish("illuminate/test/x", b"1", qos=1).wait_for_publish(timeout=TIMEOUT)
    finally:
        b.stop()
    b.stop()  # idempotent


def test_port_is_released_by_stop() -> None:
    first = EmbeddedBroker(port=0, gate=OpenGate())
    first.start()
    port = first.port
    try:
        with clients() as made:
            made.append(Client(port, "t-release").connect())
    finally:
        first.stop()
    with EmbeddedBroker(port=port, gate=OpenGate()) as second:
        assert second.url == f"mqtt://127.0.0.1:{port}"
        with clients() as made:
            made.append(Client(port, "t-release-2").connect())


def test_stop_with_connected_clients_is_quick(broker: EmbeddedBroker) -> None:
    with clients() as made:
        for n in range(3):
            c = Client(broker.port, f"t-busy-{n}")
            made.append(c.connect())
            c.subscribe("illuminate/#", qos=1)
        started = time.monotonic()
        broker.stop()
        assert time.monotonic() - started < 3
    assert not any(t.name.startswith("embedded-mqtt") for t in threading.enumerate())


def test_two_brokers_cannot_share_a_port(broker: EmbeddedBroker) -> None:
    second = EmbeddedBroker(port=broker.port, gate=OpenGate())
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="already in use"):
            second.start()
    finally:
        second.stop()
    assert time.monotonic() - started < 10
    assert not second.running
    with clients() as made:  # the first one is unharmed
        made.append(Client(broker.port, "t-still-there").connect())


def test_bind_failure_inside_amqtt_is_a_runtime_error(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skip the pre-check so the failure comes from amqtt's own start().
    monkeypatch.setattr(embedded, "_check_port_free", lambda host, port: None)
    second = EmbeddedBroker(port=broker.port, gate=OpenGate())
    try:
        with pytest.raises(RuntimeError, match="could not listen"):
            second.start()
        assert not second.running
    finally:
        second.stop()
    assert sum(t.name.startswith("embedded-mqtt") for t in threading.enumerate()) == 1


def test_start_twice_is_an_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        broker.start()
