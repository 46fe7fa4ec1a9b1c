"""Test-side stand-ins: a tiny "controller" MQTT client, and plan builders."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.protocol import (
    Ack,
    DeviceState,
    DeviceStatus,
    Kind,
    LightState,
    Plan,
    PlanStep,
    Stage,
    Topics,
    decode,
    encode,
)
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto

BLUE = LightState(on=True, color="#1E50FF", level=80)
RED = LightState(on=True, color="#FF0000", level=60)
WHITE = LightState(on=True, color="#FFFFFF", level=100)


def ms(value: datetime) -> datetime:
    """Cut to whole milliseconds, the precision of the wire format."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def now() -> datetime:
    return ms(datetime.now(UTC))


def plan(version: int, *steps: tuple[datetime, LightState], **extra: object) -> Plan:
    return Plan.model_validate(
        {
            "version": version,
            "issued_at": now(),
            "steps": [PlanStep(at=ms(at), state=state) for at, state in steps],
            **extra,
        }
    )


def in_effect(version: int, state: LightState = BLUE) -> Plan:
    """A plan whose only step is already in effect (a second ago): applied at once."""
    return plan(version, (now() - timedelta(seconds=1), state))


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.monotonic() on arrival


class TestController:
    """Publishes plans as the controller does and records what the devices send."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, broker: Mosquitto, topics: Topics | None = None) -> None:
        self.topics = topics or Topics()
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-controller-{uuid.uuid4().hex[:8]}"
        )
        self._client.username_pw_set(CONTROLLER_USER, CONTROLLER_PASSWORD)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._probe = f"{self.topics.root}/test/probe-{uuid.uuid4().hex[:8]}"
        kinds = ("ack", "state", "status")
        filters = [(self.topics.device_filter(Kind(k)), 1) for k in kinds]
        self._client.subscribe([*filters, (self._probe, 1)])
        self._client.loop_start()
        self.barrier()

    def barrier(self, timeout: float = 5.0) -> None:
        """Round-trip a probe: everything the broker sent us before it has arrived."""
        token = uuid.uuid4().hex.encode()
        self.publish(self._probe, token)
        got = self.wait(lambda r: r.topic == self._probe and r.payload == token, timeout)
        assert got is not None, "the test controller's probe did not come back"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
            )
            self._cond.notify_all()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client.on_message = None  # break the cycle: paho's sockets close on del

    def subscribe(self, topic: str) -> None:
        """Subscribe to one more topic; retained messages on it have come on return."""
        self._client.subscribe(topic, qos=1)
        self.barrier()

    # publishing

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def send_plan(self, device_id: str, body: Plan | bytes, *, retain: bool = True) -> float:
        """Publish a plan (retained, as the controller does); return the monotonic time."""
        payload = encode(body) if isinstance(body, Plan) else body
        self.publish(self.topics.plan(device_id), payload, retain=retain)
        return time.monotonic()

    # reading

    def messages(self, predicate: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        with self._cond:
            return [r for r in self._messages if predicate(r)]

    def wait(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received | None:
        """The first recorded message matching `predicate`, waiting up to `timeout`."""
        found: list[Received] = []

        def match() -> bool:
            found[:] = [r for r in self._messages if predicate(r)][:1]
            return bool(found)

        with self._cond:
            self._cond.wait_for(match, timeout)
        return found[0] if found else None

    def acks(self, device_id: str) -> list[Ack]:
        topic = self.topics.ack(device_id)
        return [decode(Ack, r.payload) for r in self.messages(lambda r: r.topic == topic)]

    def wait_ack(
        self, device_id: str, version: int, stage: Stage, timeout: float = 5.0
    ) -> tuple[Ack, float] | None:
        """The first ack of `version` at `stage`, with its arrival time."""
        topic = self.topics.ack(device_id)

        def is_it(r: Received) -> bool:
            if r.topic != topic:
                return False
            ack = decode(Ack, r.payload)
            return ack.version == version and ack.stage is stage

        got = self.wait(is_it, timeout)
        return (decode(Ack, got.payload), got.at) if got else None

    def states(self, device_id: str) -> list[tuple[DeviceState, bool]]:
        topic = self.topics.state(device_id)
        return [
            (decode(DeviceState, r.payload), r.retain)
            for r in self.messages(lambda r: r.topic == topic)
        ]

    def statuses(self, device_id: str) -> list[DeviceStatus]:
        topic = self.topics.status(device_id)
        return [
            decode(DeviceStatus, r.payload)
            for r in self.messages(lambda r: r.topic == topic and bool(r.payload))
        ]

    def wait_status(self, device_id: str, online: bool, timeout: float = 5.0) -> bool:
        topic = self.topics.status(device_id)

        def is_it(r: Received) -> bool:
            return (
                r.topic == topic
                and bool(r.payload)
                and decode(DeviceStatus, r.payload).online is online
            )

        return self.wait(is_it, timeout) is not None


def retained(broker: Mosquitto, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on `topic` as a fresh subscriber sees it (None: none)."""
    reader = TestController(broker)
    try:
        reader.subscribe(topic)
        got = reader.messages(lambda r: r.topic == topic and r.retain)
        return got[0].payload if got else None
    finally:
        reader.close()
