"""The controller's MQTT connection: `PahoBroker`, the real `Broker` (see `base.py`).

paho-mqtt 2.x runs in its own thread. What it does, and why (the measurements and the
broker settings that go with it are in `deploy/mosquitto/README.md`):

- MQTT 5 with a session that outlives the connection (Session Expiry Interval, never a
  clean start). While the controller is away the broker keeps its subscriptions and
  queues the acks devices send; after a reconnect they are delivered. The subscriptions
  are made again only when the broker says the session is gone (it restarted without
  persistence, or the session expired) or when this process has not subscribed yet; so
  a reconnect does not pull every device's retained state and status again.
- A Receive Maximum of 65,535: the broker may have that many messages in flight to the
  controller before it queues more (Mosquitto's `max_inflight_messages` applies only to
  clients that do not say). The retained state and status of 10,000 devices (20,000
  messages) at the first subscribe are then sent, not queued, and never dropped.
- Every device topic is subscribed at QoS 1: Mosquitto drops QoS 0 messages for a busy
  client instead of queueing them, and never queues them for an offline one.
- `publish(..., done=...)` maps paho's packet id to `done` through `on_publish`. The
  broker's PUBACK may be handled before `client.publish()` has returned the id to us;
  that early result is kept until the publishing call collects it (as aiomqtt keeps
  one future per packet id). Reason codes >= 0x80 (MQTT 5 refusals, e.g. 0x87 not
  authorised) call `done(False)`.
- While disconnected `publish` returns False and hands nothing to paho, whose own
  queue would send it again after a reconnect: the caller's outbox is the one place
  that retries. Packets in flight when the connection drops lose their `done` (nothing
  is called, as the interface says); paho re-sends them once after the reconnect, which
  devices ignore as a version they already have.
- Callbacks only hand off: they never block and never call back into our lock while
  holding paho's, and never hold ours while calling paho.

A broker that speaks only MQTT 3.1.1 (the embedded amqtt broker) refuses MQTT 5; build
the link with `mqtt5=False` there. It then uses a 3.1.1 persistent session
(`clean_session=False`), with the same re-subscribe rule, but without Receive Maximum
or MQTT 5 refusal codes (a 3.1.1 PUBACK is always a success).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from controller.broker.base import ConnectionListener, Done, Incoming, Sink
from devices.connection import BrokerAddress
from devices.protocol import ControllerStatus, Kind, Topics, encode

__all__ = ["Incoming", "PahoBroker"]

log = logging.getLogger(__name__)

#: How many messages the broker may have in flight to us before it queues (the largest
#: value MQTT 5 allows). paho acknowledges each one as soon as the sink has taken it.
RECEIVE_MAXIMUM = 65_535
#: How long the broker keeps our session (subscriptions and queued acks) while we are away.
SESSION_EXPIRY_S = 86_400
KEEPALIVE_S = 30
#: Our own publishes in flight at once, at most; never more than the Receive Maximum the
#: broker announces in its CONNACK (Mosquitto's `max_inflight_messages`: 1000 in the
#: shipped configs). With 20, a fan-out to 10,000 lights went at 20 per round trip, and
#: each round trip waits for this thread's turn at the interpreter.
MAX_INFLIGHT = 1000
STOP_TIMEOUT_S = 2.0
FOLLOW_CHUNK = 200
"""Vendor topics per SUBSCRIBE or UNSUBSCRIBE packet (a few KiB)."""
_SUBSCRIBED_KINDS = (Kind.STATUS, Kind.STATE, Kind.ACK)


class PahoBroker:
    """The `Broker` the controller runs on; see the module docstring."""

    def __init__(
        self,
        address: BrokerAddress,
        topics: Topics,
        client_id: str,
        sink: Sink,
        started_at: datetime,
        ca_file: str | None = None,
        *,
        mqtt5: bool = True,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        if not client_id:
            raise ValueError("the controller needs a fixed, non-empty MQTT client id")
        self.address = address
        self.topics = topics
        self.client_id = client_id
        self.sink = sink
        self.started_at = started_at
        self.mqtt5 = mqtt5
        self.session_expiry_s = session_expiry_s
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._listeners: list[ConnectionListener] = []
        # packet id -> done, for publishes of the current connection
        self._pending: dict[int, Done] = {}
        # results that arrived before publish() knew its packet id; only kept while a
        # publish() call is under way, and cleared when none is
        self._early: dict[int, bool] = {}
        self._publishing = 0
        # bumped on every disconnect: a publish that straddles one registers nothing
        self._epoch = 0
        # a SUBACK was seen for the broker's current session of ours
        self._subscribed = False
        self._subscribe_mid: int | None = None
        self.subscribes = 0
        """SUBSCRIBE packets sent: one per session, not one per connection."""
        self.connections = 0
        """Connections the broker accepted (the first and every reconnection)."""
        self.window = MAX_INFLIGHT
        """Our publishes in flight at most, as the broker's Receive Maximum allows."""
        self._resumed = False
        self._followed: frozenset[str] = frozenset()
        """The exact vendor topics asked for (`follow`)."""
        self._follow_held: set[str] = set()
        """Those subscribed (or being subscribed) in the broker's current session of ours."""
        self._follow_mids: dict[int, list[str]] = {}
        self._follow_stale: set[str] = set()
        """Topics the session may still hold though they are no longer counted as held
        (asked for again on a reconnection): unsubscribed if no longer followed."""
        self._client = self._new_client(ca_file)

    # the Broker protocol ----------------------------------------------------------

    def start(self) -> None:
        properties: Properties | None = None
        if self.mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=KEEPALIVE_S,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        client = self._client
        if self._connected.is_set():
            info = client.publish(
                self.topics.controller_status,
                encode(ControllerStatus(online=False)),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=STOP_TIMEOUT_S)
        self._connected.clear()
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._forget_in_flight()
        # break the callback cycle so paho's sockets are freed now, not at a later GC
        client.on_connect = None
        client.on_disconnect = None
        client.on_message = None
        client.on_publish = None
        client.on_subscribe = None

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def session_resumed(self) -> bool:
        return self._resumed

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def add_listener(self, listener: ConnectionListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool, done: Done | None = None, qos: int = 1
    ) -> bool:
        if not self._connected.is_set():
            return False
        with self._lock:
            self._publishing += 1
            epoch = self._epoch
        info: mqtt.MQTTMessageInfo | None = None
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        finally:
            early, queued = self._register(info, epoch, done)
        if early is not None and done is not None:
            _call(done, early)
        return queued

    def follow(self, topics: Collection[str]) -> None:
        with self._lock:
            self._followed = frozenset(topics)
        if self._connected.is_set():
            self._sync_followed(self._client)

    def _sync_followed(self, client: mqtt.Client) -> None:
        """Subscribe to the followed topics the session lacks, unsubscribe from those no
        longer followed; a separate SUBSCRIBE from the devices' one, so a vendor topic the
        broker refuses (logged) never costs the native subscriptions."""
        with self._lock:
            add = sorted(self._followed - self._follow_held)
            drop = sorted((self._follow_held | self._follow_stale) - self._followed)
            self._follow_held = set(self._followed)
            self._follow_stale = set()
        # in packets of FOLLOW_CHUNK topics: thousands of lights' topics in one packet
        # would pass the broker's packet size limit, and it would drop the connection
        for i in range(0, len(drop), FOLLOW_CHUNK):
            client.unsubscribe(drop[i : i + FOLLOW_CHUNK])
        options: Any = SubscribeOptions(qos=1) if self.mqtt5 else 1
        for i in range(0, len(add), FOLLOW_CHUNK):
            chunk = add[i : i + FOLLOW_CHUNK]
            # under the lock, so the SUBACK (on paho's thread, `_on_subscribe`) cannot be
            # handled before its packet id is noted here
            with self._lock:
                rc, mid = client.subscribe([(topic, options) for topic in chunk])
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._follow_held.difference_update(chunk)
                elif mid is not None:
                    self._follow_mids[mid] = chunk
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("could not subscribe to %d vendor topics (%s)", len(chunk), rc)

    def _follow_receive_maximum(self, client: mqtt.Client, props: Properties | None) -> None:
        """Keep our publishes in flight within the broker's Receive Maximum (65,535 when
        it names none). paho 2 reads no Receive Maximum and refuses to change its window
        while connected, so the window is set on its attribute: lowering it only holds
        back what paho has queued until acknowledgements make room."""
        announced = getattr(props, "ReceiveMaximum", None) if props is not None else None
        window = min(MAX_INFLIGHT, int(announced) if announced else 65_535)
        if client._max_inflight_messages != window:  # (see the docstring)
            client._max_inflight_messages = window
            log.info("the broker takes %d publishes in flight: sending at most that", window)
        self.window = window

    def announce(self, topic: str, payload: bytes) -> bool:
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=0, retain=False)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # helpers --------------------------------------------------------------------

    def _new_client(self, ca_file: str | None) -> mqtt.Client:
        if self.mqtt5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(
            self.topics.controller_status,
            encode(ControllerStatus(online=False)),
            qos=1,
            retain=True,
        )
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # we never publish while disconnected
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    def _register(
        self, info: mqtt.MQTTMessageInfo | None, epoch: int, done: Done | None
    ) -> tuple[bool | None, bool]:
        """Book a publish's packet id: (its result if the broker already answered,
        whether it was queued on the current connection)."""
        with self._lock:
            self._publishing -= 1
            early: bool | None = None
            queued = info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            if info is not None:
                result = self._early.pop(info.mid, None)
                if queued and epoch == self._epoch:
                    if result is not None:
                        early = result
                    elif done is not None:
                        self._pending[info.mid] = done
                else:
                    queued = False
            if self._publishing == 0:
                self._early.clear()
            return early, queued

    def _forget_in_flight(self) -> None:
        """Caller holds the lock. The connection is gone: no `done` will be called for
        what was in flight on it."""
        self._epoch += 1
        self._pending.clear()
        self._early.clear()

    def _listeners_now(self) -> list[ConnectionListener]:
        with self._lock:
            return list(self._listeners)

    def _up(self) -> None:
        if self._connected.is_set():
            return
        log.info("connected to broker %s", self.address.redacted())
        self._connected.set()
        for listener in self._listeners_now():
            _call(listener.connected)

    # paho callbacks (paho's thread) -----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = ""
            if self.mqtt5 and reason.getName() == "Unsupported protocol version":
                hint = " (the broker speaks only MQTT 3.1.1: build the link with mqtt5=False)"
            log.error(
                "broker %s refused the connection: %s%s", self.address.redacted(), reason, hint
            )
            return
        self.connections += 1
        self._resumed = bool(flags.session_present)
        if self.mqtt5:
            self._follow_receive_maximum(client, _props)
        with self._lock:
            if self.connections > 1:
                # third-party devices report at QoS 0, which the broker does not keep
                # for a session while it is away: subscribe to their topics again, so
                # it sends what they hold retained (availability, the last state) anew
                self._follow_stale |= self._follow_held
                self._follow_held = set()
                self._follow_mids = {}
            if not flags.session_present:
                self._subscribed = False
                self._follow_held = set()
                self._follow_mids = {}
                self._follow_stale = set()  # a new session holds none of them
            resubscribe = not self._subscribed
        if resubscribe:
            # One SUBSCRIBE for all kinds; retained messages are wanted here (the
            # controller learns every device's state and status from them).
            filters: list[tuple[str, Any]] = [
                (
                    self.topics.device_filter(kind),
                    SubscribeOptions(qos=1) if self.mqtt5 else 1,
                )
                for kind in _SUBSCRIBED_KINDS
            ]
            # the controller's own catch-up barrier comes back in order with the rest
            filters.append(
                (self.topics.controller_barrier, SubscribeOptions(qos=1) if self.mqtt5 else 1)
            )
            rc, mid = client.subscribe(filters)
            self.subscribes += 1
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("could not subscribe (%s); retrying on the next connection", rc)
            with self._lock:
                self._subscribe_mid = mid
        self._sync_followed(client)
        # after the SUBSCRIBE on the same connection, so the broker has our
        # subscriptions before devices react to the birth by sending their state again
        client.publish(
            self.topics.controller_status,
            encode(ControllerStatus(online=True, since=self.started_at)),
            qos=1,
            retain=True,
        )
        if not resubscribe:
            self._up()

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        with self._lock:
            if mid != self._subscribe_mid:
                asked = self._follow_mids.pop(mid, [])
                refused_topics = [t for t, r in zip(asked, reasons, strict=False) if r.is_failure]
                # asked again at the next `follow` (the controller calls it at every tick)
                self._follow_held.difference_update(refused_topics)
                if any(r.is_failure for r in reasons):  # a vendor topics' SUBSCRIBE
                    log.error(
                        "broker %s refused %d vendor topic subscriptions: give the "
                        "controller's account the third-party devices' report topics",
                        self.address.redacted(),
                        sum(1 for r in reasons if r.is_failure),
                    )
                return
            self._subscribe_mid = None
            refused = [r for r in reasons if r.is_failure]
            self._subscribed = not refused
        if refused:
            log.error(
                "broker %s refused the device subscriptions: %s",
                self.address.redacted(),
                ", ".join(str(r) for r in reasons),
            )
        self._up()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        with self._lock:
            self._forget_in_flight()
            self._subscribe_mid = None
            # a SUBSCRIBE not answered on this connection may never have reached the
            # broker, and paho does not send it again: ask for its topics anew, even
            # when the next connection resumes the session
            for chunk in self._follow_mids.values():
                self._follow_held.difference_update(chunk)
                self._follow_stale.update(chunk)  # it may have reached the broker
            self._follow_mids = {}
        if not was_up:
            return
        log.warning("lost the broker connection (%s); reconnecting", reason)
        for listener in self._listeners_now():
            _call(listener.disconnected)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        ok = not reason.is_failure
        if not ok:
            log.warning("broker refused publish %d: %s", mid, reason)
        with self._lock:
            done = self._pending.pop(mid, None)
            if done is None and self._publishing > 0:
                self._early[mid] = ok
        if done is not None:
            _call(done, ok)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # MQTT forbids it; a broker let it through
            log.warning("dropping a message whose topic is not UTF-8: %r", msg._topic[:80])
            return
        _call(self.sink, Incoming(topic, bytes(msg.payload), bool(msg.retain)))


def _call(callback: Callable[..., None], *args: Any) -> None:
    """Run a callback on paho's thread; an exception there would stop paho's loop."""
    try:
        callback(*args)
    except Exception:
        log.exception("broker callback %r failed", callback)
