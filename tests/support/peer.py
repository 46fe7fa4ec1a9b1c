"""Test-side MQTT clients and recorders: a device (or a privileged publisher) that talks
to the test broker, and thread-safe recorders for what a `Broker` hands out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from controller.broker.base import Incoming

DEADLINE_S = 60.0


class Recorder:
    """Collects items from another thread; `wait_for` blocks until a predicate holds."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    @property
    def items(self) -> list[Any]:
        with self._cond:
            return list(self._items)

    def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout: float = DEADLINE_S
    ) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._items), timeout):
                raise AssertionError(
                    f"not reached within {timeout:g} s; {len(self._items)} item(s) so far, "
                    f"last: {self._items[-3:]!r}"
                )
            return list(self._items)


class Sink(Recorder):
    """A `Broker` sink that records every `Incoming`."""

    def on(self, topic: str) -> list[Incoming]:
        return [m for m in self.items if m.topic == topic]

    def wait_count(
        self,
        n: int,
        where: Callable[[Incoming], bool] = lambda _m: True,
        timeout: float = DEADLINE_S,
    ) -> list[Incoming]:
        items = self.wait_for(lambda xs: sum(1 for m in xs if where(m)) >= n, timeout)
        return [m for m in items if where(m)]


class Listener:
    """A `ConnectionListener` that records the order of calls."""

    def __init__(self) -> None:
        self.calls = Recorder()

    def connected(self) -> None:
        self.calls("connected")

    def disconnected(self) -> None:
        self.calls("disconnected")

    def wait(self, call: str, times: int = 1, timeout: float = DEADLINE_S) -> None:
        self.calls.wait_for(lambda xs: xs.count(call) >= times, timeout)

    def count(self, call: str) -> int:
        return self.calls.items.count(call)


class Peer:
    """A paho client (MQTT 3.1.1, clean session, as devices run) for a test to drive."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        client_id: str | None = None,
        *,
        inflight: int = 20,
    ) -> None:
        self.port = port
        self.messages = Sink()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"peer-{username}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(inflight)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages(
            Incoming(msg.topic, bytes(msg.payload), bool(msg.retain))
        )

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def __enter__(self) -> Peer:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(DEADLINE_S):
            raise AssertionError(f"peer could not connect to 127.0.0.1:{self.port}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.on_message = None
        self.client.on_connect = None
        self.client.on_subscribe = None

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        rc, _mid = self.client.subscribe(topic, qos=1)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert self._subscribed.wait(DEADLINE_S), "no SUBACK"

    def publish_all(
        self, messages: Iterable[tuple[str, bytes, bool]], timeout: float = DEADLINE_S * 4
    ) -> int:
        """Publish QoS 1 and wait until the broker acknowledged every one; returns how many."""
        infos = [self.client.publish(t, p, qos=1, retain=r) for t, p, r in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS, info.rc
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge every publish in time"
        return len(infos)
