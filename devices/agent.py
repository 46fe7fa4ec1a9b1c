"""The device agent that runs at a monument: native protocol v1, device side.

The agent holds one MQTT connection (username = client id = device id). It receives
retained, versioned plans on its own plan topic, arms them, and applies each step to its
fixture at the step's instant by its own clock, acknowledging every stage.

Threads:
- paho's network thread runs the callbacks. `on_message` only hands the payload to a
  queue; it never blocks and never calls the client.
- one worker thread owns the plan. It decodes, acks, times the steps and drives the
  fixture. It waits on the queue in short slices, so a new plan or a stop is noticed at
  once and a step fires within a few milliseconds of its instant.

Design choices worth knowing:
- A plan whose version is at or below the latest one the agent has accepted is ignored,
  so retained redeliveries (every reconnect) and repeats do no harm.
- A malformed plan is logged, counted (`malformed_plans`) and ignored.
- A plan whose `not_after` has passed is acked `expired`; a rejected plan (behaviour
  `reject`) is acked `rejected`. Neither replaces the plan that was running.
- Catch-up: on arrival, the step in effect now (`Plan.step_at(now)`) is applied at once;
  older past steps are skipped. When several steps fall due together (a clock jump),
  only the latest is applied.
- A fixture that raises makes the agent ack `failed` with the error as the reason.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field

from devices.clock import Clock, system_clock
from devices.connection import BrokerAddress, new_client
from devices.fixture import Fixture, SimulatedFixture
from devices.protocol import (
    MAX_REASON_CHARS,
    Ack,
    ControllerStatus,
    DeviceState,
    DeviceStatus,
    LightState,
    Plan,
    PlanStep,
    ProtocolError,
    Stage,
    Topics,
    check_device_id,
    decode,
    encode,
    format_instant,
)

log = logging.getLogger(__name__)

FIRMWARE = "illuminate-agent/0.1.0"
WAIT_SLICE_S = 0.5
"""The longest the worker sleeps before it looks at the clock again."""

AckMode = Literal["normal", "never", "late", "reject"]


class Behaviour(BaseModel):
    """How the agent acknowledges. Anything but `normal` is for simulation and tests.

    - `normal`: acks every stage at once.
    - `never`: applies steps but reports nothing back: no acks, no state reports (a
      silent device; only its online status is seen).
    - `late`: sends each ack `ack_delay_s` seconds late (steps still apply on time).
    - `reject`: acks each new plan `rejected` with `reject_reason` and applies nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack: AckMode = "normal"
    ack_delay_s: float = Field(default=5.0, ge=0, le=3600)
    reject_reason: str = Field(
        default="rejected by the simulated device", min_length=1, max_length=MAX_REASON_CHARS
    )


_ItemKind = Literal["plan", "controller", "connected", "stop"]


def _release(client: mqtt.Client) -> None:
    """Drop the callbacks, which point back at us, so the stopped client is freed at once.

    paho closes its internal wake-up socket pair only when the client is deleted; a
    client kept alive by a reference cycle would leak those sockets until a gc pass
    (a ResourceWarning). Without the callbacks, dropping our reference frees it.
    """
    client.on_connect = None
    client.on_disconnect = None
    client.on_connect_fail = None
    client.on_subscribe = None
    client.on_message = None


def describe(state: LightState) -> str:
    """A short human description of a light state, for logs."""
    if not state.on:
        return "off"
    fade = f", fade {state.transition_s:g}s" if state.transition_s else ""
    return f"on {state.color} at {state.level}%{fade}"


class Agent:
    """One native device: connection, plan, step timer and fixture.

    Call `start()` once and `stop()` once. The read-only properties and the `wait_*`
    methods are safe to use from any thread (tests use them to wait for progress).
    """

    def __init__(
        self,
        device_id: str,
        address: BrokerAddress,
        *,
        password: str | None = None,
        topics: Topics | None = None,
        fixture: Fixture | None = None,
        clock: Clock = system_clock,
        behaviour: Behaviour | None = None,
        firmware: str = FIRMWARE,
        ca_file: str | None = None,
        keepalive_s: int = 30,
    ) -> None:
        self.device_id = check_device_id(device_id)
        if address.username is not None and address.username != device_id:
            raise ValueError(
                f"the MQTT username must be the device id {device_id!r}, not {address.username!r}"
            )
        self.address = address.with_credentials(device_id, password)
        self.topics = topics if topics is not None else Topics()
        self.fixture: Fixture = fixture if fixture is not None else SimulatedFixture(clock=clock)
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.firmware = firmware
        self._clock = clock
        self._ca_file = ca_file
        self._keepalive_s = keepalive_s

        self._plan_topic = self.topics.plan(device_id)
        self._ack_topic = self.topics.ack(device_id)
        self._state_topic = self.topics.state(device_id)
        self._status_topic = self.topics.status(device_id)
        self._controller_topic = self.topics.controller_status

        self._inbox: queue.SimpleQueue[tuple[_ItemKind, bytes]] = queue.SimpleQueue()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._started = False
        self._stopped = False

        # Owned by the worker thread only.
        self._version = 0
        self._plan: Plan | None = None
        self._pending: list[PlanStep] = []
        self._last_applied: tuple[int, datetime] | None = None
        self._delayed: list[tuple[float, int, Ack]] = []
        self._seq = itertools.count()

        # Observable from any thread; guarded by _cond (an RLock underneath).
        self._cond = threading.Condition()
        self._session = False  # CONNACK received, not yet disconnected
        self._connected = False  # ... and the subscriptions acknowledged
        self._connects = 0
        self._sub_mid: int | None = None
        self._plan_messages = 0
        self._malformed = 0
        self._accepted: list[int] = []
        self._applied: list[tuple[int, datetime]] = []
        self._acks: list[Ack] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def client_id(self) -> str:
        return self.device_id

    def start(self) -> None:
        """Connect in the background (retrying) and start the worker. Returns at once."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError(f"agent {self.device_id} was already started")
            self._started = True
            offline = encode(DeviceStatus(online=False))
            client = new_client(
                self.address,
                self.client_id,
                will=(self._status_topic, offline),
                ca_file=self._ca_file,
            )
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_connect_fail = self._on_connect_fail
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            self._client = client
            self._worker = threading.Thread(
                target=self._run, name=f"agent-{self.device_id}", daemon=True
            )
            self._worker.start()
            client.connect_async(self.address.host, self.address.port, self._keepalive_s)
            client.loop_start()
        log.info("agent %s: connecting to %s", self.device_id, self.address.redacted())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: worker joined, `online:false` published, disconnected."""
        with self._lifecycle:
            if not self._started or self._stopped:
                return
            self._stopped = True
        self._inbox.put(("stop", b""))
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                log.warning("agent %s: the worker did not stop in %.1fs", self.device_id, timeout)
        client = self._client
        if client is None:
            return
        with self._cond:
            session = self._session
        if session:
            info = client.publish(
                self._status_topic, encode(DeviceStatus(online=False)), qos=1, retain=True
            )
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.info("agent %s: offline status not sent: %s", self.device_id, exc)
        client.disconnect()
        client.loop_stop()
        _release(client)
        self._client = None
        with self._cond:
            self._session = self._connected = False
            self._cond.notify_all()
        log.info("agent %s: stopped", self.device_id)

    # ------------------------------------------------------------------ observation

    @property
    def connected(self) -> bool:
        """Connected and subscribed: a plan published now reaches the agent."""
        with self._cond:
            return self._connected

    @property
    def connects(self) -> int:
        """How many times the agent has connected (1 + reconnects)."""
        with self._cond:
            return self._connects

    @property
    def plan_version(self) -> int:
        """The latest plan version accepted (0 before any)."""
        with self._cond:
            return self._accepted[-1] if self._accepted else 0

    @property
    def plan_messages(self) -> int:
        """Plan payloads handled by the worker, valid or not, new or repeated."""
        with self._cond:
            return self._plan_messages

    @property
    def malformed_plans(self) -> int:
        with self._cond:
            return self._malformed

    @property
    def applied(self) -> list[tuple[int, datetime]]:
        """(plan version, step instant) for every step applied to the fixture."""
        with self._cond:
            return list(self._applied)

    @property
    def applied_versions(self) -> list[int]:
        """Plan versions with at least one applied step, in order."""
        with self._cond:
            return list(dict.fromkeys(v for v, _ in self._applied))

    @property
    def acks_sent(self) -> list[Ack]:
        """Acks handed to the client, in order (after any `late` delay)."""
        with self._cond:
            return list(self._acks)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds (it may read this agent's properties)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.wait_for(lambda: self._connected, timeout)

    def wait_applied(self, version: int, timeout: float, step_at: datetime | None = None) -> bool:
        """Wait until a step of `version` (the one at `step_at`, if given) was applied."""

        def done() -> bool:
            return any(
                v == version and (step_at is None or at == step_at) for v, at in self._applied
            )

        return self.wait_for(done, timeout)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.warning("agent %s: connection refused: %s", self.device_id, reason_code)
            return
        birth = DeviceStatus(online=True, firmware=self.firmware, since=self._clock())
        client.publish(self._status_topic, encode(birth), qos=1, retain=True)
        _, self._sub_mid = client.subscribe([(self._plan_topic, 1), (self._controller_topic, 1)])
        with self._cond:
            self._session = True
            self._cond.notify_all()
        self._inbox.put(("connected", b""))

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
            # the broker's ACL refused a topic: the agent cannot work; say so loudly
            log.error("agent %s: subscription refused: %s", self.device_id, ", ".join(refused))
            return
        with self._cond:
            self._connected = True
            self._connects += 1
            self._cond.notify_all()
        log.info("agent %s: connected", self.device_id)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("agent %s: cannot reach %s, retrying", self.device_id, self.address.redacted())

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        with self._cond:
            self._session = self._connected = False
            self._cond.notify_all()
        if reason_code.is_failure:
            log.warning("agent %s: disconnected (%s), reconnecting", self.device_id, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._plan_topic:
            self._inbox.put(("plan", bytes(msg.payload)))
        elif msg.topic == self._controller_topic:
            self._inbox.put(("controller", bytes(msg.payload)))

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            wait = self._wait_s()
            try:
                item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                item = None
            if item is not None:
                kind, payload = item
                if kind == "stop":
                    return
                try:
                    self._handle(kind, payload)
                except Exception:
                    log.exception("agent %s: failed to handle %s", self.device_id, kind)
            try:
                self._run_due()
            except Exception:
                log.exception("agent %s: failed to run a due step", self.device_id)

    def _wait_s(self) -> float:
        wait = WAIT_SLICE_S
        if self._pending:
            wait = min(wait, (self._pending[0].at - self._clock()).total_seconds())
        if self._delayed:
            wait = min(wait, self._delayed[0][0] - time.monotonic())
        return max(0.0, wait)

    def _handle(self, kind: _ItemKind, payload: bytes) -> None:
        if kind == "plan":
            self._on_plan(payload)
        elif kind == "controller":
            try:
                status = decode(ControllerStatus, payload)
            except ProtocolError as exc:
                log.warning("agent %s: ignored a bad controller status: %s", self.device_id, exc)
                return
            if status.online:
                self._publish_state()
        elif kind == "connected":
            self._publish_state()

    def _on_plan(self, payload: bytes) -> None:
        with self._cond:
            self._plan_messages += 1
            self._cond.notify_all()
        try:
            plan = decode(Plan, payload)
        except ProtocolError as exc:
            log.warning("agent %s: ignored a malformed plan: %s", self.device_id, exc)
            with self._cond:
                self._malformed += 1
                self._cond.notify_all()
            return
        if plan.version < self._version:
            # a sender that counts below us (say, a controller whose database was
            # restored): ignore the plan, but say which version we hold
            log.info(
                "agent %s: plan %d is older than %d; ignored",
                self.device_id,
                plan.version,
                self._version,
            )
            self._publish_state()
            return
        if plan.version == self._version:
            log.debug("agent %s: plan %d already seen", self.device_id, plan.version)
            return
        self._version = plan.version
        with self._cond:
            self._accepted.append(plan.version)
            self._cond.notify_all()
        log.info("agent %s: plan %d received", self.device_id, plan.version)

        if self.behaviour.ack == "reject":
            self._ack(
                Ack(version=plan.version, stage=Stage.REJECTED, reason=self.behaviour.reject_reason)
            )
            return
        self._ack(Ack(version=plan.version, stage=Stage.RECEIVED))
        now = self._clock()
        if plan.not_after is not None and now > plan.not_after:
            self._ack(Ack(version=plan.version, stage=Stage.EXPIRED, reason="not_after has passed"))
            return
        self._plan = plan
        self._pending = [step for step in plan.steps if step.at > now]
        self._ack(Ack(version=plan.version, stage=Stage.ARMED))
        current = plan.step_at(now)
        if current is not None:
            self._apply(plan.version, current)

    def _run_due(self) -> None:
        if self._pending and self._plan is not None:
            now = self._clock()
            due = 0
            while due < len(self._pending) and self._pending[due].at <= now:
                due += 1
            if due:
                step = self._pending[due - 1]
                if due > 1:
                    log.warning(
                        "agent %s: %d steps fell due together; applying the latest",
                        self.device_id,
                        due,
                    )
                self._pending = self._pending[due:]
                self._apply(self._plan.version, step)
        mono = time.monotonic()
        while self._delayed and self._delayed[0][0] <= mono:
            _, _, ack = heapq.heappop(self._delayed)
            self._publish_ack(ack)

    def _apply(self, version: int, step: PlanStep) -> None:
        try:
            output = self.fixture.apply(step.state)
        except Exception as exc:
            log.exception("agent %s: the fixture failed", self.device_id)
            reason = (str(exc) or type(exc).__name__)[:MAX_REASON_CHARS]
            self._ack(Ack(version=version, stage=Stage.FAILED, step_at=step.at, reason=reason))
            return
        applied_at = self._clock()
        self._last_applied = (version, step.at)
        with self._cond:
            self._applied.append((version, step.at))
            self._cond.notify_all()
        log.info(
            "agent %s: plan %d step %s applied: %s",
            self.device_id,
            version,
            format_instant(step.at),
            describe(output),
        )
        self._ack(
            Ack(
                version=version,
                stage=Stage.APPLIED,
                step_at=step.at,
                applied_at=applied_at,
                state=output,
            )
        )
        self._publish_state()

    # ------------------------------------------------------------------ publishing

    def _ack(self, ack: Ack) -> None:
        ack = ack.model_copy(update={"device": self.device_id})
        mode = self.behaviour.ack
        if mode == "never":
            return
        if mode == "late":
            due = time.monotonic() + self.behaviour.ack_delay_s
            heapq.heappush(self._delayed, (due, next(self._seq), ack))
            return
        self._publish_ack(ack)

    def _publish_ack(self, ack: Ack) -> None:
        self._publish(self._ack_topic, encode(ack), retain=False)
        with self._cond:
            self._acks.append(ack)
            self._cond.notify_all()

    def _publish_state(self) -> None:
        if self.behaviour.ack == "never":
            return
        version, step_at = self._last_applied or (None, None)
        state = DeviceState(
            device=self.device_id,
            state=self.fixture.current,
            plan_version=version,
            step_at=step_at,
            reported_at=self._clock(),
            firmware=self.firmware,
        )
        self._publish(self._state_topic, encode(state), retain=True)

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        client = self._client
        if client is None:
            return
        info = client.publish(topic, payload, qos=1, retain=retain)
        # NO_CONN: paho keeps QoS 1 messages and sends them after the reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning(
                "agent %s: publish to %s failed: %s",
                self.device_id,
                topic,
                mqtt.error_string(info.rc),
            )
