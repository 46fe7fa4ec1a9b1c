"""One device's MQTT connection on a `DeviceHost`: the transport of a `NativeDevice`.

A session owns one paho client (username = client id = device id, a retained last
will `online: false`). On every CONNACK it publishes its birth, subscribes to its plan
topic and the controller's status and has the device report its state; messages go
straight to the device's state machine. The host's loop thread runs all of it; the
observation members (`connected`, `plan_version`, `wait_for`, ...) are safe from any
thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from devices.connection import BrokerAddress, LoopClient, new_client
from devices.fixture import Fixture, SimulatedFixture
from devices.native import FIRMWARE, HISTORY, Behaviour, NativeDevice, OnApplied
from devices.planstore import PlanStore
from devices.protocol import Ack, Topics, check_device_id
from devices.sensor import Sensor
from devices.timers import Timer

if TYPE_CHECKING:
    from collections.abc import Callable

    from devices.host import DeviceHost

log = logging.getLogger(__name__)


class Phase(StrEnum):
    """Where a session's connection stands (its label in progress reports)."""

    NEW = "not started"
    SCHEDULED = "offline by design"  # its start delay has not passed yet
    QUEUED = "not yet tried"  # waiting for the connect gate, first attempt
    CONNECTING = "connecting"  # an attempt in flight: TCP, CONNACK, SUBACK
    ONLINE = "online"  # connected and subscribed
    RETRY = "waiting to retry"
    SUB_REFUSED = "subscription refused"
    STOPPED = "stopped"


def _socket_error(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"socket error: {text or type(exc).__name__}"


class DeviceSession:
    """A native device (`self.device`) on one MQTT connection of a host."""

    def __init__(
        self,
        host: DeviceHost,
        device_id: str,
        address: BrokerAddress,
        *,
        password: str | None = None,
        topics: Topics | None = None,
        fixture: Fixture | None = None,
        behaviour: Behaviour | None = None,
        firmware: str = FIRMWARE,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        history: int = HISTORY,
        problem_level: int = logging.WARNING,
        store: PlanStore | None = None,
        clock_synced: Callable[[], bool | None] | None = None,
        on_applied: OnApplied | None = None,
        sensor: Sensor | None = None,
    ) -> None:
        check_device_id(device_id)
        if address.username is not None and address.username != device_id:
            raise ValueError(
                f"the MQTT username must be the device id {device_id!r}, not {address.username!r}"
            )
        self.address = address.with_credentials(device_id, password)
        self._host = host
        self._ca_file = ca_file
        self._keepalive_s = keepalive_s
        self._problem_level = problem_level
        self.device = NativeDevice(
            device_id,
            fixture=fixture if fixture is not None else SimulatedFixture(clock=host.clock),
            timers=host.timers,
            publish=self._publish,
            cond=host.cond,
            topics=topics,
            behaviour=behaviour,
            firmware=firmware,
            history=history,
            store=store,
            clock_synced=clock_synced,
            on_applied=on_applied,
            sensor=sensor,
        )
        self._client: mqtt.Client | None = None

        # Connection bookkeeping, written by the host's loop thread (phase under cond).
        self.phase = Phase.NEW
        self.attempts = 0  # attempts started
        self.failures = 0  # failed attempts since the last CONNACK
        self.last_error: str | None = None  # why the last attempt or session ended
        self.holding_slot = False  # holds a slot of the host's connect gate
        self.tcp_pending = False  # TCP connect started, outcome not yet seen
        self.session_up = False  # CONNACK received, not yet disconnected
        self.retry_timer: Timer | None = None
        self._sub_mid: int | None = None
        self._connects = 0

    # ------------------------------------------------------------------ identity

    @property
    def device_id(self) -> str:
        return self.device.device_id

    @property
    def client_id(self) -> str:
        return self.device.device_id

    @property
    def topics(self) -> Topics:
        return self.device.topics

    @property
    def fixture(self) -> Fixture:
        return self.device.fixture

    @property
    def behaviour(self) -> Behaviour:
        return self.device.behaviour

    @property
    def firmware(self) -> str:
        return self.device.firmware

    @property
    def client(self) -> mqtt.Client:
        if self._client is None:
            raise RuntimeError(f"device {self.device_id}: the connection is not open")
        return self._client

    # ------------------------------------------------------------------ observation

    @property
    def connected(self) -> bool:
        """Connected and subscribed: a plan published now reaches the device."""
        return self.phase is Phase.ONLINE

    @property
    def connects(self) -> int:
        """How many times the device has connected (1 + reconnects)."""
        return self._connects

    @property
    def plan_version(self) -> int:
        return self.device.plan_version

    @property
    def plan_messages(self) -> int:
        return self.device.plan_messages

    @property
    def malformed_plans(self) -> int:
        return self.device.malformed_plans

    @property
    def stale_plans(self) -> int:
        return self.device.stale_plans

    @property
    def resumed_step(self) -> tuple[int, datetime] | None:
        return self.device.resumed_step

    @property
    def applied(self) -> list[tuple[int, datetime]]:
        return self.device.applied

    @property
    def applied_versions(self) -> list[int]:
        """Plan versions with at least one applied step, in order."""
        return list(dict.fromkeys(v for v, _ in self.device.applied))

    @property
    def acks_sent(self) -> list[Ack]:
        return self.device.acks_sent

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds (it may read this device's properties)."""
        with self._host.cond:
            return self._host.cond.wait_for(predicate, timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.wait_for(lambda: self.phase is Phase.ONLINE, timeout)

    def wait_applied(self, version: int, timeout: float, step_at: datetime | None = None) -> bool:
        """Wait until a step of `version` (the one at `step_at`, if given) was applied."""

        def done() -> bool:
            return any(
                v == version and (step_at is None or at == step_at) for v, at in self.device.applied
            )

        return self.wait_for(done, timeout)

    # ------------------------------------------------------------------ host side

    def open(self) -> mqtt.Client:
        """Boot: make the paho client, wired to the host's loop, and resume the stored plan.

        The host calls this once, before the connection is tried: a device that held a
        plan shows the step in effect at once, without waiting for the broker.
        """
        client = new_client(
            self.address,
            self.client_id,
            will=(self.device.status_topic, self.device.offline()),
            ca_file=self._ca_file,
            client_class=LoopClient,
        )
        client.user_data_set(self)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        host = self._host
        client.on_socket_open = host.on_socket_open
        client.on_socket_close = host.on_socket_close
        client.on_socket_register_write = host.on_socket_register_write
        client.on_socket_unregister_write = host.on_socket_unregister_write
        # host, port and keepalive for every later reconnect(); no I/O here
        client.connect_async(self.address.host, self.address.port, self._keepalive_s)
        self._client = client
        # acks it sends now wait in paho's queue for the connection
        self.device.resume()
        return client

    def release(self) -> None:
        """Drop the client and its callbacks, which point back at us, so it is freed at once."""
        client = self._client
        if client is None:
            return
        client.on_connect = None
        client.on_subscribe = None
        client.on_disconnect = None
        client.on_message = None
        client.on_socket_open = None
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        client.user_data_set(None)
        self._client = None

    def note_error(self, text: str) -> None:
        """Why this attempt failed; the first cause of an attempt is the one kept."""
        if self.last_error is None:
            self.last_error = text
            log.log(self._problem_level, "device %s: %s", self.device_id, text)

    def note_socket_error(self, exc: BaseException) -> None:
        self.note_error(_socket_error(exc))

    def attempt_failed(self) -> None:
        """An attempt ended before its CONNACK: the next one tries another address."""
        if isinstance(self._client, LoopClient):
            self._client.try_next_address()

    # ------------------------------------------------------------------ publishing

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        client = self._client
        if client is None:
            return
        info = client.publish(topic, payload, qos=1, retain=retain)
        # NO_CONN: paho keeps QoS 1 messages and sends them after the reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning(
                "device %s: publish to %s failed: %s",
                self.device_id,
                topic,
                mqtt.error_string(info.rc),
            )

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self._host.attempt_answered(self)
        if reason_code.is_failure:
            self.note_error(f"connack refused: {reason_code}")
            return  # the broker closes the connection; on_disconnect follows
        self.failures = 0
        self.session_up = True
        client.publish(self.device.status_topic, self.device.birth(), qos=1, retain=True)
        _, self._sub_mid = client.subscribe(
            [(self.device.plan_topic, 1), (self.device.controller_topic, 1)]
        )
        self.device.on_connected()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Any,
    ) -> None:
        if mid != self._sub_mid:
            return
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            # the broker's ACL refused a topic: the device cannot work; say so loudly
            self.last_error = None
            self.note_error(f"subscription refused: {', '.join(refused)}")
            log.error("device %s: subscription refused: %s", self.device_id, ", ".join(refused))
            self._host.set_phase(self, Phase.SUB_REFUSED)
            return
        self._connects += 1
        self.last_error = None
        self._host.set_phase(self, Phase.ONLINE)
        log.info("device %s: connected", self.device_id)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        was_up = self.session_up
        self.session_up = False
        if not was_up:
            self.attempt_failed()
        if reason_code.is_failure:
            if was_up:
                self.note_error(f"connection lost: {reason_code}")
            else:
                self.note_error(f"closed before CONNACK: {reason_code}")
        self._host.connection_ended(self)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.device.on_message(msg.topic, bytes(msg.payload))
