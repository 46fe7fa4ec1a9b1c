"""The broker seam: what the controller needs from an MQTT connection, and nothing more.

`PahoBroker` (`controller/broker/link.py`) is the real one; `MemoryBroker`
(`controller/broker/memory.py`) is the in-memory double the loop components' unit tests
drive by hand. `tests/controller/test_broker_contract.py` runs the same contract on both.

Rules every implementation keeps:
- `publish` never blocks on the network. Its `done` callback is called exactly once per
  call that returned True: `done(True)` when the broker acknowledged the packet (PUBACK
  for QoS 1), `done(False)` when the broker refused it. A connection lost before the
  acknowledgement calls nothing: the caller times the delivery out on its monotonic
  clock and publishes again (devices drop the duplicate version).
- Callbacks (`done`, the message sink, connection listeners) run on the implementation's
  own thread. They must only hand off: never block, never call back into the broker.
- Messages from devices go to the `sink` given at construction, in arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Incoming:
    """One message from the broker."""

    topic: str
    payload: bytes
    retain: bool


Sink = Callable[[Incoming], None]
Done = Callable[[bool], None]


class ConnectionListener(Protocol):
    def connected(self) -> None:
        """The connection is up and subscribed (after every reconnect too)."""

    def disconnected(self) -> None:
        """The connection went down; the implementation reconnects by itself."""


class Broker(Protocol):
    def start(self) -> None:
        """Connect in the background; reconnect for ever until `stop`."""

    def stop(self) -> None:
        """Announce the controller offline, disconnect, release the connection."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def session_resumed(self) -> bool:
        """Did the newest connection find the broker still holding the controller's
        session? Then the broker was not restarted without its state, and still holds
        the retained messages it held. False before the first connection."""

    def wait_connected(self, timeout: float) -> bool: ...

    def add_listener(self, listener: ConnectionListener) -> None: ...

    def publish(
        self, topic: str, payload: bytes, *, retain: bool, done: Done | None = None, qos: int = 1
    ) -> bool:
        """Queue one publish (QoS 1 unless asked: a third-party device's adapter may want
        another). False (and `done` never called) when it could not even be queued, for
        example while disconnected. At QoS 0, `done(True)` means it was sent."""

    def follow(self, topics: Collection[str]) -> None:
        """Subscribe to these exact topics too (the report topics of third-party
        devices), instead of those given before, now and after every reconnect."""

    def announce(self, topic: str, payload: bytes) -> bool:
        """Send one QoS 0 message, not retained, with no completion: for a message whose
        next copy replaces it (the clock beacon), which must not wait behind the QoS 1
        publishes in flight, nor be sent again late. False when disconnected."""
