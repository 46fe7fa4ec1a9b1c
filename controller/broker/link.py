"""The controller's MQTT connection: paho in its own thread, messages handed off to a queue.

Callbacks only hand off (never block, never call back into our locks). Subscriptions
are made in on_connect, so they come back after every reconnect, and the retained
controller birth makes devices publish their state again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from devices.connection import BrokerAddress, new_client
from devices.protocol import ControllerStatus, Kind, Topics, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool


class BrokerLink:
    def __init__(
        self,
        address: BrokerAddress,
        topics: Topics,
        client_id: str,
        inbox: queue.Queue[Incoming],
        started_at: datetime,
        ca_file: str | None = None,
    ) -> None:
        self.address = address
        self.topics = topics
        self.inbox = inbox
        self.started_at = started_at
        self.connected = threading.Event()
        self.on_connected: list[Any] = []
        self.on_disconnected: list[Any] = []
        will = encode(ControllerStatus(online=False))
        self.client = new_client(
            address,
            client_id,
            will=(topics.controller_status, will),
            ca_file=ca_file,
            max_queued_messages=0,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self) -> None:
        if self.connected.is_set():
            info = self.client.publish(
                self.topics.controller_status,
                encode(ControllerStatus(online=False)),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        # break the callback cycle so paho's sockets are freed now, not at a later GC
        self.client.on_connect = None
        self.client.on_disconnect = None
        self.client.on_message = None

    def publish(self, topic: str, payload: bytes, retain: bool) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _props: Any,
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.address.redacted(), reason)
            return
        for kind in (Kind.STATUS, Kind.STATE, Kind.ACK):
            client.subscribe(self.topics.device_filter(kind), qos=1)
        client.publish(
            self.topics.controller_status,
            encode(ControllerStatus(online=True, since=self.started_at)),
            qos=1,
            retain=True,
        )
        log.info("connected to broker %s", self.address.redacted())
        self.connected.set()
        for callback in self.on_connected:
            callback()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self.connected.is_set():
            log.warning("lost the broker connection (%s); reconnecting", reason)
        self.connected.clear()
        for callback in self.on_disconnected:
            callback()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.inbox.put_nowait(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain)))
        except queue.Full:
            log.error("intake queue full; dropping a message on %s", msg.topic)
