"""Bare MQTT clients of the bench: the ack observer, the echo floor and its publisher.

The observer is a privileged client (the controller's account, another client id)
subscribed at QoS 0 to `{root}/devices/+/ack`: it sees every ack the devices send, with
the time it arrived, without taking part in the product's flow. QoS 0 keeps the
broker from queueing (and, past its queue limit, dropping) for it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = "illuminate/v1"
FLOOR_PREFIX = "floor"


def client(client_id: str, username: str, password: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)
    return c


def connect(c: mqtt.Client, host: str, port: int, timeout: float = 60.0) -> None:
    connected = threading.Event()
    previous: Any = c.on_connect

    def on_connect(cl: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if previous is not None:
            previous(cl, userdata, flags, reason, props)
        if not reason.is_failure:
            connected.set()

    c.on_connect = on_connect
    c.connect(host, port, keepalive=60)
    c.loop_start()
    if not connected.wait(timeout):
        c.loop_stop()
        raise RuntimeError(f"could not connect to the broker on {host}:{port}")


def serve_until_signalled(
    c: mqtt.Client, host: str, port: int, ready: threading.Event, wait_s: float, failed: str
) -> int:
    """A bench client process's life: connect, print `ready` once `ready` is set (or say
    `failed` and return 1 after `wait_s`), then serve until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_a: stop.set())
    c.connect(host, port, keepalive=60)
    c.loop_start()
    if not ready.wait(wait_s):
        print(failed, file=sys.stderr)
        return 1
    print("ready", flush=True)
    while not stop.wait(0.5):
        pass
    c.disconnect()
    c.loop_stop()
    return 0


def device_of(topic: str) -> str:
    return topic.split("/")[-2]


@dataclass
class Applied:
    version: int
    step_at: datetime
    applied_at: datetime
    seen: float  # monotonic


@dataclass
class Observations:
    armed: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    applied: dict[str, list[Applied]] = field(default_factory=lambda: defaultdict(list))
    echoes: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))


class AckObserver:
    """Collects every ack on `{root}/devices/+/ack`; parse with `poll()`."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.host, self.port = host, port
        self._raw: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.seen = Observations()
        self._subscribed = threading.Event()
        self.client = client("bench-observer", username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        connect(self.client, self.host, self.port, timeout)
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the observer's subscription was not acknowledged")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, c: mqtt.Client, *_args: Any) -> None:
        c.subscribe(f"{ROOT}/devices/+/ack", qos=0)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        at = time.monotonic()
        with self._lock:
            self._raw.append((at, msg.topic, bytes(msg.payload)))

    def poll(self) -> Observations:
        with self._lock:
            raw, self._raw = self._raw, []
        for at, topic, payload in raw:
            device = device_of(topic)
            if device.startswith(FLOOR_PREFIX):
                run = payload.decode(errors="replace")
                self.seen.echoes[run].setdefault(device, at)
                continue
            try:
                body = json.loads(payload)
                stage = body["stage"]
                version = int(body["version"])
            except (ValueError, KeyError, TypeError):
                continue
            if stage == "armed":
                self.seen.armed[device].append((version, at))
            elif stage == "applied":
                try:
                    self.seen.applied[device].append(
                        Applied(
                            version,
                            datetime.fromisoformat(body["step_at"]),
                            datetime.fromisoformat(body["applied_at"]),
                            at,
                        )
                    )
                except (KeyError, ValueError, TypeError):
                    continue
        return self.seen


def floor_ids(shard_index: int, count: int) -> list[str]:
    return [f"{FLOOR_PREFIX}{shard_index:02d}-{n:05d}" for n in range(1, count + 1)]


def echo_floor(
    observer: AckObserver,
    ids: list[str],
    run: str,
    payload_size: int,
    retain: bool,
    username: str,
    password: str,
    deadline: float,
    progress: Any,
) -> float | None:
    """A bare paho publisher sends one QoS 1 message to each id's plan topic; the echo
    clients answer on the ack topics. Seconds until the observer saw every echo (None
    past `deadline`). Retained messages are deleted afterwards."""
    pub = client(f"bench-floor-{run}", username, password)
    connect(pub, observer.host, observer.port)
    head = run.encode() + b";"
    payload = head + b"x" * max(0, payload_size - len(head))
    try:
        start = time.monotonic()
        for device in ids:
            pub.publish(f"{ROOT}/devices/{device}/plan", payload, qos=1, retain=retain)
        done: float | None = None
        while time.monotonic() < deadline:
            seen = observer.poll().echoes.get(run, {})
            progress(len(seen))
            if len(seen) >= len(ids):
                done = max(seen.values()) - start
                break
            time.sleep(0.02)
        if retain:
            last = None
            for device in ids:
                last = pub.publish(f"{ROOT}/devices/{device}/plan", b"", qos=1, retain=True)
            if last is not None:
                last.wait_for_publish(timeout=30)
        return done
    finally:
        pub.disconnect()
        pub.loop_stop()


class PlanWatch:
    """Counts the devices whose plan topic holds (retained, or published since it
    subscribed) at least the version expected of them."""

    def __init__(
        self, host: str, port: int, username: str, password: str, expected: dict[str, int]
    ) -> None:
        self.host, self.port = host, port
        self.expected = expected
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self.client = client(f"bench-plan-watch-{time.monotonic_ns()}", username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # the broker may still be starting
            try:
                connect(self.client, self.host, self.port, timeout=5)
                return
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, c: mqtt.Client, *_args: Any) -> None:
        c.subscribe(f"{ROOT}/devices/+/plan", qos=0)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = device_of(msg.topic)
        try:
            version = int(json.loads(msg.payload)["version"])
        except (ValueError, KeyError, TypeError):
            return
        if version >= self.expected.get(device, 1):
            with self._lock:
                self._held.add(device)

    def count(self) -> int:
        with self._lock:
            return len(self._held)
