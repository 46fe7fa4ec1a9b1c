"""The controller's side of one third-party device, for tests: an MQTT client on the
controller's account that subscribes to an adapter's report topics, publishes its
commands, and folds what arrives through `parse` and `Reported.merged`, as the
controller does.

    with AdapterDriver(adapter, "127.0.0.1", port) as ctl:   # subscribe first
        with WledEmulator(...) as dev:
            mark = dev.mark()
            ctl.send(BLUE_80)
            dev.wait_applied(after=mark)
            ctl.sync(dev, after=mark)       # everything it published since has arrived
            assert adapter.confirms(BLUE_80, ctl.reported)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.adapters import (
    Adapter,
    Availability,
    Command,
    Malformed,
    Parsed,
    Reply,
    Report,
    Reported,
    combined,
)
from devices.protocol import LightState
from tests.emulators.base import DEFAULT_TIMEOUT, Emulator
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER


class AdapterDriver:
    def __init__(
        self,
        adapter: Adapter,
        host: str,
        port: int,
        username: str = CONTROLLER_USER,
        password: str = CONTROLLER_PASSWORD,
    ) -> None:
        self.adapter = adapter
        self.host, self.port = host, port
        self._lock = threading.Condition()
        self.messages: list[tuple[str, bytes, Parsed]] = []
        self.reported = Reported()
        self.availability: Availability | None = None
        """What every availability topic last said, combined (devices/adapters)."""
        self._availability: dict[str, Availability] = {}
        self.replies: list[Reply] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"driver-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def __enter__(self) -> AdapterDriver:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(DEFAULT_TIMEOUT):
            raise TimeoutError("the driver did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # break the cycle (client -> callbacks -> self): paho's sockets close on del
        self.client.on_connect = self.client.on_subscribe = self.client.on_message = None

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.adapter.topics.reports])

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = self.adapter.parse(msg.topic, msg.payload)
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), parsed))
            if isinstance(parsed, Report):
                if parsed.state is not None:
                    self.reported = self.reported.merged(parsed.state)
                if parsed.availability is not None:
                    self._availability[msg.topic] = parsed.availability
                    self.availability = combined(self._availability)
                if parsed.reply is not None:
                    self.replies.append(parsed.reply)
            self._lock.notify_all()

    def publish(self, commands: tuple[Command, ...]) -> None:
        for command in commands:
            info = self.client.publish(
                command.topic, command.payload, qos=command.qos, retain=command.retain
            )
            info.wait_for_publish(DEFAULT_TIMEOUT)

    def send(self, target: LightState, *, ref: int = 0) -> None:
        """The adapter's command for `target`, published."""
        self.publish(self.adapter.command(target, ref=ref))

    def request_state(self, *, ref: int = 0) -> bool:
        """The adapter's state request, published; False where the vendor has none."""
        request = self.adapter.state_request(ref=ref)
        if request is None:
            return False
        self.publish(request.commands)
        return True

    def wait(self, predicate: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(t, p[:80]) for t, p, _ in self.messages[-6:]]
                    raise TimeoutError(f"driver: condition not met in {timeout:g} s; got {got}")
                self._lock.wait(left)

    def sync(
        self, device: Emulator[Any], *, after: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Until every message `device` published after `after` has arrived here
        (those on this adapter's report topics)."""
        device.wait_idle(timeout=timeout)
        reports = set(self.adapter.topics.reports)
        owed = Counter(m for m in device.published(after=after) if m[0] in reports)

        def arrived() -> bool:
            have = Counter((t, p) for t, p, _ in self.messages)
            return all(have[m] >= n for m, n in owed.items())

        self.wait(arrived, timeout)

    def parsed(self, topic: str, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> Parsed:
        """How the message (`topic`, `payload`) that arrives here was read."""
        found: list[Parsed] = []

        def seen() -> bool:
            found[:] = [p for t, b, p in self.messages if (t, b) == (topic, payload)]
            return bool(found)

        self.wait(seen, timeout)
        return found[-1]

    def malformed(self) -> list[Malformed]:
        with self._lock:
            return [p for _, _, p in self.messages if isinstance(p, Malformed)]
