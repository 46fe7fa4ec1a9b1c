"""An in-memory broker for unit tests: publishes are recorded, and the test decides when
(and whether) each one is acknowledged, and what the devices send."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

from controller.broker.base import ConnectionListener, Done, Incoming, Sink


@dataclass
class Published:
    topic: str
    payload: bytes
    retain: bool
    done: Done | None
    acked: bool | None = None
    qos: int = 1


class MemoryBroker:
    """A broker double. Nothing happens by itself: call `ack`, `deliver`, `connect`,
    `disconnect`. `auto_ack=True` acknowledges every publish at once."""

    def __init__(self, sink: Sink, *, auto_ack: bool = False, echo: Collection[str] = ()) -> None:
        self.sink = sink
        self.auto_ack = auto_ack
        self.echo = frozenset(echo)
        """Topics the controller subscribes to itself (its catch-up barrier): a publish
        there, once acknowledged, comes back to the sink, as a broker would send it."""
        self.published: list[Published] = []
        self.retained: dict[str, bytes] = {}
        self._listeners: list[ConnectionListener] = []
        self._connected = threading.Event()
        self._resumed = False
        self._lock = threading.Lock()
        self.started = False
        self.followed: frozenset[str] = frozenset()
        """The exact topics `follow` asked for."""

    # the Broker protocol --------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self.connect()

    def stop(self) -> None:
        self.started = False
        self._connected.clear()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def session_resumed(self) -> bool:
        return self._resumed

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def add_listener(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool, done: Done | None = None, qos: int = 1
    ) -> bool:
        if not self.is_connected:
            return False
        item = Published(topic, payload, retain, done, qos=qos)
        with self._lock:
            self.published.append(item)
        if self.auto_ack:
            self._complete(item, True)
        return True

    def follow(self, topics: Collection[str]) -> None:
        self.followed = frozenset(topics)

    def announce(self, topic: str, payload: bytes) -> bool:
        if not self.is_connected:
            return False
        with self._lock:
            self.published.append(Published(topic, payload, False, None, acked=True, qos=0))
        return True

    # what a test does -------------------------------------------------------------

    def connect(self, *, resumed: bool = False) -> None:
        """Connect; `resumed`: as a broker that kept the session (and its retained
        messages) would say."""
        self._resumed = resumed
        self._connected.set()
        for listener in list(self._listeners):
            listener.connected()

    def disconnect(self) -> None:
        """Drop the connection: unacknowledged publishes are lost, as on a real link."""
        self._connected.clear()
        with self._lock:
            for item in self.published:
                if item.acked is None:
                    item.acked = False
                    item.done = None
        for listener in list(self._listeners):
            listener.disconnected()

    def unacked(self) -> list[Published]:
        with self._lock:
            return [p for p in self.published if p.acked is None]

    def ack(self, topic: str | None = None, *, ok: bool = True) -> int:
        """Acknowledge the unacknowledged publishes (of one topic); returns how many."""
        items = [p for p in self.unacked() if topic is None or p.topic == topic]
        for item in items:
            self._complete(item, ok)
        return len(items)

    def deliver(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.sink(Incoming(topic, data, retain))

    def topics(self) -> list[str]:
        with self._lock:
            return [p.topic for p in self.published]

    def _complete(self, item: Published, ok: bool) -> None:
        item.acked = ok
        if ok and item.retain:
            self.retained[item.topic] = item.payload
        if item.done is not None:
            item.done(ok)
        if ok and item.topic in self.echo and self.is_connected:
            self.sink(Incoming(item.topic, item.payload, False))
