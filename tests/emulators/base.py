"""What every emulated lighting controller shares: its MQTT connection and last will,
start and stop, a thread-safe record of what it received, applied and published, and
waits on that record with a deadline.

An emulator is a real paho-mqtt client that behaves as its vendor documents, with a
small in-memory light. One thread runs its network loop and its timers (WLED's
throttled reports, Tasmota's Backlog delay), so a device handles one message at a time
as firmware does. Tests read its state from any thread.

Use from a test (accounts: `EMULATOR_ACCOUNTS`; tests/support/test-rig.acl lets
`emulator-<adapter name>` and the controller's account use the vendor's topic roots:
`wled/`, `cmnd/` `stat/` `tele/` `tasmota/`, `zigbee2mqtt/`, `esphome/` `homeassistant/`,
a one-level Shelly Gen2 prefix, `shellies/`; name test devices under them):

    mosquitto.add_users(EMULATOR_ACCOUNTS)       # or a broker started with them
    with WledEmulator("127.0.0.1", mosquitto.port, config={"topic": "wled/porch"}) as dev:
        mark = dev.mark()
        ...publish the adapter's command...
        light = dev.wait_applied(lambda light: light.on, after=mark)
        assert dev.shown.matches(target)
        dev.wait_idle()                          # every report it owes is out

`config` takes the same keys as the adapter's registration config, so one dict serves
both. Knobs (constructor keywords; attributes too, read at each message):

- `offline=True`: never connects; `start()` does nothing. `drop()` cuts a running
  emulator off without a DISCONNECT, so the broker publishes its last will.
- `wrong_colour=True` (or `"#RRGGBB"`): applies another colour than the one asked
  (the hue turned a third of the way round; grey becomes red), and reports what it
  applied, as a faulty or mis-wired controller would (Zigbee2MQTT's echo after a
  `/set` is optimistic, as the bridge's is: only a `/get` shows the truth).
- `silent=True`: applies commands but publishes no state reports (availability and
  RPC replies still go out).
- `publish_malformed(i)` publishes the i-th of `malformed_messages()`, broken messages
  on the vendor's report topics; `publish_raw` anything else.

`stop()` (and leaving the `with`) publishes the offline payload and disconnects;
`start()` again after `drop()` or `stop()` is a reboot that kept its light. Waits
(`wait_applied`, `wait_received`, `wait_published`, `wait_for`) take `after=mark()` and
a `timeout`, and raise TimeoutError naming what did happen. `tests/emulators/driver.py`
is the controller's side for adapter tests.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.colour import RGB, XY, chroma, hex_to_rgb, rgb_to_xy, value_percent
from devices.protocol import LightState

EMULATOR_PASSWORD = "emulator-pw"
VENDORS = ("wled", "tasmota", "zigbee2mqtt", "ha-json", "shelly-gen2", "shelly-gen1")
EMULATOR_ACCOUNTS: dict[str, str] = {f"emulator-{v}": EMULATOR_PASSWORD for v in VENDORS}
"""Username to password of each vendor's emulated devices (tests/support/test-rig.acl
lets `emulator-<vendor>` use that vendor's topic trees)."""

DEFAULT_TIMEOUT = 10.0
_LOOP_STEP = 0.02
Kind = Literal["received", "applied", "published", "connected"]
LightT = TypeVar("LightT")


class EmulatorError(RuntimeError):
    """The emulator could not connect or subscribe (credentials, ACL, broker down)."""


@dataclass(frozen=True)
class Event:
    """One thing the emulator did. `light` is the state after an `applied` event."""

    seq: int
    kind: Kind
    topic: str = ""
    payload: bytes = b""
    light: Any = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Shown:
    """What the light emits: the chroma it shows and its effective output in percent
    of full (colour value times brightness). Off shows black at 0. A light that keeps
    CIE xy (Zigbee) also gives `xy`, and is compared by it."""

    on: bool
    rgb: RGB
    level: float
    white: int = 0
    xy: XY | None = None

    @classmethod
    def of(
        cls, on: bool, colour: RGB, brightness: float, white: int = 0, xy: XY | None = None
    ) -> Shown:
        level = brightness * value_percent(colour) / 100 if on else 0.0
        if level <= 0:
            return cls(False, RGB(0, 0, 0), 0.0, 0)
        return cls(True, chroma(colour), level, white, xy)

    def matches(
        self,
        target: LightState,
        *,
        rgb_tolerance: int = 3,
        xy_tolerance: float = 0.02,
        level_tolerance: float = 1.5,
    ) -> bool:
        """Whether the light shows `target`: off is off; on needs the same chroma (or
        xy) and effective level, within the tolerances."""
        colour = hex_to_rgb(target.color)
        want_level = target.level * value_percent(colour) / 100 if target.on else 0.0
        if want_level <= 0:
            return not self.on
        if not self.on:
            return False
        if self.xy is not None:
            close = math.dist(self.xy, rgb_to_xy(colour)) <= xy_tolerance
        else:
            want = chroma(colour)
            close = all(abs(a - b) <= rgb_tolerance for a, b in zip(self.rgb, want, strict=True))
        return close and abs(self.level - want_level) <= level_tolerance


def wrong_colour_for(asked: RGB, knob: bool | str) -> RGB:
    """The colour a `wrong_colour` emulator applies instead of `asked`."""
    if isinstance(knob, str):
        return hex_to_rgb(knob)
    r, g, b = asked
    turned = RGB(b, r, g)  # the hue a third of the way round
    if max(asked) - min(asked) < 16:  # grey or white: turning does nothing visible
        return RGB(max(asked) or 255, 0, 0)
    return turned


class Emulator(ABC, Generic[LightT]):
    """One emulated device. Subclasses set `vendor` and implement the hooks below."""

    vendor: ClassVar[str]

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        *,
        config: Mapping[str, Any],
        offline: bool = False,
        wrong_colour: bool | str = False,
        silent: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.username = username if username is not None else f"emulator-{self.vendor}"
        self.password = password if password is not None else EMULATOR_PASSWORD
        self.config = dict(config)
        self.offline = offline
        self.wrong_colour = wrong_colour
        self.silent = silent
        self.client_id = client_id or f"{self.vendor}-{uuid.uuid4().hex[:10]}"
        self._lock = threading.Condition()
        self._events: list[Event] = []
        self._seq = itertools.count(1)
        self._timers: list[tuple[float, int, Callable[[], None], bool]] = []
        self._timer_seq = itertools.count()
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._pending_subs: set[int] = set()
        self._sub_error: str | None = None
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._busy = 0
        self._probe: str | None = None
        self._light: LightT = self.initial_light()

    # ---- hooks for each vendor ----------------------------------------------------

    @abstractmethod
    def initial_light(self) -> LightT:
        """The light as it is at power-on."""

    @abstractmethod
    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) the firmware subscribes to."""

    @abstractmethod
    def will(self) -> tuple[str, bytes]:
        """The last will's (topic, payload); published retained."""

    @abstractmethod
    def online_payload(self) -> bytes:
        """What goes on the will's topic, retained, once connected."""

    def on_connected(self) -> None:
        """After the birth message (the connection is up, subscriptions sent)."""

    @abstractmethod
    def handle(self, topic: str, payload: bytes) -> None:
        """One message on a subscribed topic (in the loop thread)."""

    @property
    @abstractmethod
    def shown(self) -> Shown:
        """What the light emits now."""

    @abstractmethod
    def malformed_messages(self) -> list[tuple[str, bytes]]:
        """Broken messages on this vendor's report topics, for `publish_malformed`."""

    will_qos: int = 0

    # ---- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Connect, subscribe and publish the birth message; return once subscribed.

        Raises EmulatorError if the broker refuses the login or a subscription."""
        if self.offline or self.running:
            return self
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.username, self.password)
        topic, payload = self.will()
        client.will_set(topic, payload, qos=self.will_qos, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._halt.clear()
        self._sub_error = None
        self._subscribed = False
        self._probed = False
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise EmulatorError(f"{self.vendor}: cannot reach {where}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=self.client_id, daemon=True)
        self._thread.start()
        try:
            deadline = time.monotonic() + timeout
            with self._lock:
                while not self._sub_error and not (
                    self._subscribed and not self._pending_subs and self._probe is None
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise EmulatorError(self._not_ready(timeout))
                    self._lock.wait(left)
                if self._sub_error:
                    raise EmulatorError(self._sub_error)
                self._probed = True
        except BaseException:
            self._shutdown(graceful=False)
            raise
        return self

    def _not_ready(self, timeout: float) -> str:
        if self._subscribed and self._probe is not None:
            return (
                f"{self.vendor}: {self.username!r} did not get its own birth message on "
                f"{self._probe!r} back within {timeout:g} s: the broker's ACL refuses it "
                "(tests/support/test-rig.acl gives each emulator account its vendor's "
                "topic trees)"
            )
        return f"{self.vendor}: not connected and subscribed within {timeout:g} s"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Publish the offline payload (retained) and disconnect."""
        self._shutdown(graceful=True)

    def drop(self) -> None:
        """Cut the connection without a DISCONNECT: the broker publishes the last will."""
        self._shutdown(graceful=False)

    def _shutdown(self, *, graceful: bool) -> None:
        client = self._client
        if client is None:
            return
        if graceful and client.is_connected() and self.running:
            topic, payload = self.will()
            self.later(0, lambda: self._publish_now(topic, payload, qos=self.will_qos, retain=True))
            with contextlib.suppress(TimeoutError):
                self.wait_idle(timeout=5)
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        if graceful:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop(timeout=0.1)
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._timers.clear()
            self._lock.notify_all()
        client.on_connect = client.on_subscribe = client.on_message = None
        self._client = None

    def _run(self) -> None:
        client = self._client
        assert client is not None
        while not self._halt.is_set():
            rc = client.loop(timeout=_LOOP_STEP)
            self._run_timers()
            if rc != mqtt.MQTT_ERR_SUCCESS and not self._halt.is_set():
                # the broker went away: retry as firmware does, until stopped
                self._halt.wait(0.2)
                with contextlib.suppress(OSError, ValueError):
                    client.reconnect()

    # ---- MQTT callbacks (loop thread) -------------------------------------------------

    _subscribed = False
    _probed = False

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            with self._lock:
                self._sub_error = f"{self.vendor}: broker refused {self.username!r}: {rc}"
                self._lock.notify_all()
            self._halt.set()
            return
        subs = self.subscriptions()
        with self._lock:
            self._subscribed = False
            self._pending_subs.clear()
            for topic, qos in subs:
                _, mid = client.subscribe(topic, qos)
                if mid is not None:
                    self._pending_subs.add(mid)
            self._subscribed = True
        topic, _ = self.will()
        self._publish_now(topic, self.online_payload(), qos=self.will_qos, retain=True)
        with self._lock:
            if not self._probed:
                self._probe = topic
                client.subscribe(topic, 0)
        self.on_connected()
        self._record("connected")

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, mid: int, codes: Any, _p: Any) -> None:
        with self._lock:
            self._pending_subs.discard(mid)
            if any(code.is_failure for code in codes):
                self._sub_error = (
                    f"{self.vendor}: the broker refused a subscription of {self.username!r} "
                    "(tests/support/test-rig.acl gives each emulator account its vendor's "
                    "topic trees)"
                )
            self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if self._probe is not None and msg.topic == self._probe:
            # our own birth message came back: the ACL lets this account use its topics
            client.unsubscribe(self._probe)
            with self._lock:
                self._probe = None
                self._lock.notify_all()
            return
        self._record("received", msg.topic, bytes(msg.payload))
        with self._lock:
            self._busy += 1
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception as exc:  # firmware ignores what it cannot read
            self._record("received", f"!error {type(exc).__name__}: {exc}", b"")
        finally:
            with self._lock:
                self._busy -= 1
                self._lock.notify_all()

    # ---- for the vendor modules --------------------------------------------------------

    @property
    def light(self) -> LightT:
        """The light's state now (an immutable snapshot)."""
        with self._lock:
            return self._light

    def apply(self, light: LightT) -> None:
        """Set the light (recorded as an `applied` event, even when nothing changed)."""
        with self._lock:
            self._light = light
        self._record("applied", light=light)

    def wrong(self, asked: RGB) -> RGB:
        """`asked`, or the wrong colour when the `wrong_colour` knob is set."""
        return wrong_colour_for(asked, self.wrong_colour) if self.wrong_colour else asked

    def report(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish a state report, unless `silent`."""
        if not self.silent:
            self._publish_now(topic, payload, qos=qos, retain=retain)

    def send(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish whatever `silent` says (availability, RPC replies)."""
        self._publish_now(topic, payload, qos=qos, retain=retain)

    def later(self, delay_s: float, action: Callable[[], None], *, periodic: bool = False) -> None:
        """Run `action` in the loop thread after `delay_s` (firmware timers). A
        `periodic` one (a telemetry period) does not keep `wait_idle` waiting."""
        with self._lock:
            entry = (time.monotonic() + delay_s, next(self._timer_seq), action, periodic)
            self._timers.append(entry)
            self._timers.sort(key=lambda t: (t[0], t[1]))

    def _run_timers(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > time.monotonic():
                    return
                _, _, action, _ = self._timers.pop(0)
                self._busy += 1
            try:
                action()
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()

    def _publish_now(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        client = self._client
        if client is None:
            return
        info = client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            self._infos = [i for i in self._infos if not i.is_published()]
            self._infos.append(info)
        self._record("published", topic, payload)

    def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish anything, from any thread (it goes out from the loop thread)."""
        self.later(0, lambda: self._publish_now(topic, payload, qos=0, retain=retain))

    def publish_malformed(self, which: int = 0) -> tuple[str, bytes]:
        """Publish one of `malformed_messages()` and wait until it is out; returns it."""
        topic, payload = self.malformed_messages()[which]
        if not self.running:
            raise EmulatorError(f"{self.vendor}: not connected, nothing can go out")
        self.publish_raw(topic, payload)
        self.wait_idle()
        return topic, payload

    # ---- the record, and waits on it -------------------------------------------------

    def _record(self, kind: Kind, topic: str = "", payload: bytes = b"", light: Any = None) -> None:
        with self._lock:
            self._events.append(Event(next(self._seq), kind, topic, payload, light))
            self._lock.notify_all()

    def mark(self) -> int:
        """The sequence number of the latest event: pass as `after=` to wait for newer."""
        with self._lock:
            return self._events[-1].seq if self._events else 0

    def events(self, kind: Kind | None = None, *, after: int = 0) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > after and kind in (None, e.kind)]

    def published(self, *, after: int = 0) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message published after `after`."""
        return [(e.topic, e.payload) for e in self.events("published", after=after)]

    def wait_for(
        self,
        kind: Kind,
        match: Callable[[Event], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Event:
        """The first `kind` event after `after` that `match` accepts; TimeoutError if
        none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self._events:
                    if event.seq > after and event.kind == kind and (match is None or match(event)):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = ", ".join(f"{e.kind} {e.topic}" for e in self._events[-8:])
                    raise TimeoutError(
                        f"{self.vendor} {self.client_id}: no {kind} event within "
                        f"{timeout:g} s (latest: {seen or 'nothing'})"
                    )
                self._lock.wait(left)

    def wait_applied(
        self,
        match: Callable[[LightT], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> LightT:
        """The light of the first application after `after` that `match` accepts."""
        event = self.wait_for(
            "applied",
            None if match is None else (lambda e: match(e.light)),
            after=after,
            timeout=timeout,
        )
        light: LightT = event.light
        return light

    def wait_received(
        self, topic: str | None = None, *, after: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        return self.wait_for(
            "received",
            None if topic is None else (lambda e: e.topic == topic),
            after=after,
            timeout=timeout,
        )

    def wait_published(
        self, topic: str | None = None, *, after: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        return self.wait_for(
            "published",
            None if topic is None else (lambda e: e.topic == topic),
            after=after,
            timeout=timeout,
        )

    def wait_idle(self, *, timeout: float = DEFAULT_TIMEOUT, timers: bool = True) -> None:
        """Until no timer is pending (throttled reports, Backlog steps) and every
        publish has left the socket."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (
                (timers and any(not t[3] for t in self._timers))
                or self._busy
                or any(not i.is_published() for i in self._infos)
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.vendor} {self.client_id}: not idle in {timeout:g} s")
                self._lock.wait(min(left, _LOOP_STEP))
