"""An MQTT 5 test client that reports what the broker decided.

With MQTT 5 the broker answers every decision with a reason code: CONNACK for the
login, PUBACK for a QoS 1 publish (0x87 "Not authorized" when the ACL refuses it,
where MQTT 3.1.1 would get a plain PUBACK), SUBACK for each filter. So a test can
assert a refusal without waiting for something not to happen.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from controller.broker.base import Incoming
from tests.support.peer import Sink

WAIT_S = 30.0
"""How long to wait for the broker's answer: generous, never a speed bound."""


class Probe:
    """One connection. Construct, then `connect()`; read `messages` and `disconnects`."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        mqtt311: bool = False,
    ) -> None:
        self.port = port
        self.messages = Sink()
        self.disconnects = Sink()
        self._lock = threading.Lock()
        self._connack: ReasonCode | None = None
        self._connected = threading.Event()
        self._answers: dict[int, Any] = {}
        self._answered = threading.Condition(self._lock)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # MQTT 3.1.1 (as devices run) only for logins: its PUBACK says nothing
            protocol=mqtt.MQTTv311 if mqtt311 else mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages(
            Incoming(m.topic, bytes(m.payload), bool(m.retain))
        )

    # --- paho callbacks: record and signal only

    def _on_connect(self, _c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        self._connack = code
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        self.disconnects(str(code))
        self._connected.set()  # a refused or dropped connect answers too

    def _on_publish(self, _c: Any, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        self._answer(mid, code)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self._answer(mid, codes)

    def _answer(self, mid: int, value: Any) -> None:
        with self._answered:
            self._answers[mid] = value
            self._answered.notify_all()

    def _wait_answer(self, mid: int) -> Any:
        with self._answered:
            if not self._answered.wait_for(lambda: mid in self._answers, WAIT_S):
                raise AssertionError(f"no answer from the broker for packet {mid}")
            return self._answers.pop(mid)

    # --- what tests call

    def connect(self) -> bool:
        """True when the broker accepted the login (the connection then stays up)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            raise AssertionError("no CONNACK")
        return self._connack is not None and not self._connack.is_failure

    @property
    def is_connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> bool:
        """Publish QoS 1; True when the broker accepted it (PUBACK success). At QoS 0,
        True once it was sent (the broker answers nothing)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            info.wait_for_publish(WAIT_S)
            return info.is_published()
        code: ReasonCode = self._wait_answer(info.mid)
        return not code.is_failure

    def subscribe(self, topic_filter: str) -> bool:
        """Subscribe QoS 1; True when the broker granted the filter."""
        _rc, mid = self.client.subscribe(topic_filter, qos=1)
        codes: list[ReasonCode] = self._wait_answer(mid)
        return not codes[0].is_failure

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def can_connect(
    port: int, username: str, password: str, client_id: str, *, mqtt311: bool = False
) -> bool:
    with Probe(port, username, password, client_id, mqtt311=mqtt311) as probe:
        return probe.connect()
