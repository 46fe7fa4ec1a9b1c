"""The device side of native protocol v1, without a transport.

`NativeDevice` is the per-device state machine that both the single agent and the fleet
simulator run: it decodes plans, arms them, applies each step to its fixture at the
step's instant by its own clock, acks every stage and reports its state. It never
touches a network: it publishes through a `publish(topic, payload, retain)` callable
and times steps on a `TimerHeap`. One event-loop thread calls it; the observation
properties and `wait_for` are safe from any thread (they use the shared condition).

Rules worth knowing:
- A plan whose version is at or below the latest one accepted is ignored, so retained
  redeliveries (every reconnect) and repeats do no harm. A plan *below* it is stale: it
  is counted (`stale_plans`) and answered with a state report, which tells the sender
  which version the device holds.
- What the device holds (the highest version taken, the running plan, the last step
  applied) is saved in its `PlanStore` whenever it changes, before the acks that tell of
  it. `resume()` (at boot, before connecting) loads it: the stored plan is armed again,
  the step in effect now is shown at once and only later steps are timed, so a reboot
  mid-window relights the window without waiting for the broker, and a version below
  the stored one is stale even if the broker kept it retained. Showing again the step
  that was applied before the reboot is not a new application: no ack, not in `applied`
  (the state report on connect says it); a step that fell due while the device was down
  is applied and acked as usual.
- The birth carries `plan_version`, the highest version the device holds.
- A malformed plan is logged, counted (`malformed_plans`) and ignored.
- A plan whose `not_after` has passed is acked `expired`; a rejected plan (behaviour
  `reject`) is acked `rejected`. Neither replaces the plan that was running.
- Catch-up: on arrival, the step in effect now (`Plan.step_at(now)`) is applied at once;
  older past steps are skipped. When several steps fall due together (a clock jump),
  only the latest is applied.
- A fixture that raises makes the device ack `failed` with the error as the reason.
- Light sensor (`devices/sensor.py`): a device with one acks each applied step once its
  output has settled (the step's fade, then the sensor's `settle_s`), with the sensor's
  `reading` in the ack. The step's state report waits with it, so the controller hears
  the measurement before the echo. A sensor that fails gives an ack without a reading,
  and so does a step replaced by the next one before its reading was taken.
- Clock discipline: the controller's clock beacons (`devices/clocksync.py`) tell the
  device its offset, reported as `clock_offset_ms` in every state report and ack (a
  state report is sent when it first is known and whenever it moves by more than the
  tolerance). While the offset is beyond the tolerance the device applies by the
  controller's time: its own clock plus the offset, for steps, catch-up, `not_after`
  and the times it reports. When that correction begins or ends, the step that holds
  at the corrected now is shown (one applied early by a clock running ahead is taken
  back) and the steps after it are timed again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.clock import Clock
from devices.clocksync import ControllerTime
from devices.fixture import Fixture
from devices.planstore import HeldPlan, MemoryPlanStore, PlanStore
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
    Reading,
    Stage,
    Topics,
    check_device_id,
    decode,
    encode,
    format_instant,
)
from devices.sensor import Sensor
from devices.timers import Timer, TimerHeap

log = logging.getLogger(__name__)

FIRMWARE = "illuminate-agent/0.1.0"
HISTORY = 1000
"""Default number of acks and applied steps a device remembers for observation."""

AckMode = Literal["normal", "never", "late", "reject"]
Publish = Callable[[str, bytes, bool], None]
"""publish(topic, payload, retain): QoS 1, queued while the connection is down."""
OnApplied = Callable[[str, int, datetime, datetime, LightState], None]
"""on_applied(device, version, step_at, applied_at, output): a step was set on the fixture."""


class Behaviour(BaseModel):
    """How the device acknowledges. Anything but `normal` is for simulation and tests.

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


def describe(state: LightState) -> str:
    """A short human description of a light state, for logs."""
    if not state.on:
        return "off"
    fade = f", fade {state.transition_s:g}s" if state.transition_s else ""
    return f"on {state.color} at {state.level}%{fade}"


class NativeDevice:
    """Plan handling, acks and state reports of one device."""

    def __init__(
        self,
        device_id: str,
        *,
        fixture: Fixture,
        timers: TimerHeap,
        publish: Publish,
        cond: threading.Condition,
        topics: Topics | None = None,
        behaviour: Behaviour | None = None,
        firmware: str = FIRMWARE,
        history: int = HISTORY,
        store: PlanStore | None = None,
        clock_synced: Callable[[], bool | None] | None = None,
        on_applied: OnApplied | None = None,
        sensor: Sensor | None = None,
    ) -> None:
        """`clock_synced`, when given, says whether the device's clock is synchronised
        (`devices.kernelclock.kernel_clock_synced`); its answer goes in each state report.
        `sensor`: a light sensor whose reading goes in each applied ack."""
        self.device_id = check_device_id(device_id)
        self.sensor = sensor
        self._clock_synced = clock_synced
        self._on_applied = on_applied
        self.store: PlanStore = store if store is not None else MemoryPlanStore()
        self.topics = topics if topics is not None else Topics()
        self.fixture = fixture
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.firmware = firmware
        self._timers = timers
        self._clock: Clock = timers.clock
        self.controller_time = ControllerTime(timers.clock, timers.monotonic)
        self._reported_offset: int | None = None
        self._publish = publish
        self._cond = cond

        self.plan_topic = self.topics.plan(device_id)
        self.controller_topic = self.topics.controller_status
        self._ack_topic = self.topics.ack(device_id)
        self._state_topic = self.topics.state(device_id)
        self.status_topic = self.topics.status(device_id)

        # Owned by the loop thread.
        self._plan: Plan | None = None
        self._pending: list[PlanStep] = []
        self._last_applied: tuple[int, datetime] | None = None
        self._step_timer: Timer | None = None

        # Observable from any thread; written under _cond.
        self._version = 0
        self._plan_messages = 0
        self._malformed = 0
        self._stale = 0
        self._resumed: tuple[int, datetime] | None = None
        self._applied: deque[tuple[int, datetime]] = deque(maxlen=history)
        self._acks: deque[Ack] = deque(maxlen=history)

    def _now(self) -> datetime:
        """The time the device applies by: its own clock, or the controller's when its
        own is off by more than the tolerance (see `devices/clocksync.py`)."""
        return self._clock() + self.controller_time.correction()

    # ------------------------------------------------------------------ payloads

    def birth(self) -> bytes:
        """The retained `online: true` status, sent on every connect."""
        return encode(
            DeviceStatus(
                online=True,
                firmware=self.firmware,
                since=self._now(),
                plan_version=self._version or None,
            )
        )

    @staticmethod
    def offline() -> bytes:
        """The `online: false` status: last will, and sent on a clean stop."""
        return encode(DeviceStatus(online=False))

    # ------------------------------------------------------------------ inputs

    def resume(self) -> None:
        """At boot: take up what the store holds (call once, before any plan arrives).

        The stored version becomes the floor; the stored plan is armed with its steps
        still to come, and the step in effect now is shown at once.
        """
        try:
            held = self.store.load()
        except Exception:
            log.exception("device %s: could not load the stored plan", self.device_id)
            held = None
        if held is None:
            log.debug("device %s: no stored plan; waiting for one", self.device_id)
            return
        with self._cond:
            self._version = max(self._version, held.version)
            self._cond.notify_all()
        self._last_applied = held.applied
        plan = held.plan
        if plan is None:
            log.info("device %s: holds version %d, no plan to run", self.device_id, held.version)
            return
        now = self._now()
        self._plan = plan
        self._pending = [step for step in plan.steps if step.at > now]
        current = plan.step_at(now)
        log.info(
            "device %s: resumed plan %d (holds %d), %d steps to come",
            self.device_id,
            plan.version,
            held.version,
            len(self._pending),
        )
        if current is not None:
            if held.applied == (plan.version, current.at):
                self._show_again(plan.version, current)
            else:
                self._apply(plan.version, current)
        self._arm()

    def on_connected(self) -> None:
        """A session began: report the state (the retained plan follows by itself)."""
        self._publish_state()

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.plan_topic:
                self._on_plan(payload)
            elif topic == self.controller_topic:
                self._on_controller(payload)
        except Exception:
            log.exception("device %s: failed to handle a message on %s", self.device_id, topic)

    def close(self) -> None:
        """Stop timing steps (the device is stopping)."""
        if self._step_timer is not None:
            self._step_timer.cancel()
            self._step_timer = None

    # ------------------------------------------------------------------ observation

    @property
    def plan_version(self) -> int:
        """The latest plan version accepted (0 before any)."""
        return self._version

    @property
    def plan_messages(self) -> int:
        """Plan payloads handled, valid or not, new or repeated."""
        return self._plan_messages

    @property
    def malformed_plans(self) -> int:
        return self._malformed

    @property
    def stale_plans(self) -> int:
        """Plans refused because their version is below the one held."""
        return self._stale

    @property
    def resumed_step(self) -> tuple[int, datetime] | None:
        """(version, step instant) shown again at boot from the store, if any."""
        return self._resumed

    @property
    def applied(self) -> list[tuple[int, datetime]]:
        """(plan version, step instant) for every step applied to the fixture."""
        with self._cond:
            return list(self._applied)

    @property
    def acks_sent(self) -> list[Ack]:
        """Acks handed to the connection, in order (after any `late` delay)."""
        with self._cond:
            return list(self._acks)

    # ------------------------------------------------------------------ plans

    def _on_controller(self, payload: bytes) -> None:
        try:
            status = decode(ControllerStatus, payload)
        except ProtocolError as exc:
            log.warning("device %s: ignored a bad controller status: %s", self.device_id, exc)
            return
        if status.now is not None:
            self._on_beacon(status.now, status.clock_tolerance_ms)
        elif status.online:
            self._publish_state()

    def _on_beacon(self, controller_now: datetime, tolerance_ms: int | None) -> None:
        """The controller's clock: learn the offset, time the steps by it, and report
        the offset when it moved by more than the tolerance since last reported."""
        sync = self.controller_time
        was_off, before = sync.beyond_tolerance(), sync.correction()
        sync.observe(controller_now, tolerance_ms)
        correction = sync.correction()
        if sync.beyond_tolerance() != was_off:
            if correction:
                log.warning(
                    "device %s: own clock is off by %d ms from the controller's; "
                    "applying by the controller's time",
                    self.device_id,
                    sync.offset_ms(),
                )
            else:
                log.info("device %s: own clock agrees with the controller's again", self.device_id)
        tolerance = timedelta(milliseconds=sync.tolerance_ms)
        if abs(correction - before) > tolerance:
            self._retime()  # the time applied by moved: what holds now may differ
        elif correction != before:
            self._arm()  # a small refinement: only the timer moves
        offset = sync.reported_ms()
        last = self._reported_offset
        if offset is not None and (last is None or abs(offset - last) > sync.tolerance_ms):
            self._publish_state()

    def _on_plan(self, payload: bytes) -> None:
        with self._cond:
            self._plan_messages += 1
            self._cond.notify_all()
        try:
            plan = decode(Plan, payload)
        except ProtocolError as exc:
            log.warning("device %s: ignored a malformed plan: %s", self.device_id, exc)
            with self._cond:
                self._malformed += 1
                self._cond.notify_all()
            return
        if plan.version < self._version:
            # a sender that counts below us (say, a controller whose database was
            # restored): ignore the plan, but say which version we hold
            log.warning(
                "device %s: plan %d is older than the %d it holds; ignored",
                self.device_id,
                plan.version,
                self._version,
            )
            with self._cond:
                self._stale += 1
                self._cond.notify_all()
            self._publish_state()
            return
        if plan.version == self._version:
            log.debug("device %s: plan %d already seen", self.device_id, plan.version)
            return
        with self._cond:
            self._version = plan.version
            self._cond.notify_all()
        log.info("device %s: plan %d received", self.device_id, plan.version)

        if self.behaviour.ack == "reject":
            self._save()
            self._ack(
                Ack(version=plan.version, stage=Stage.REJECTED, reason=self.behaviour.reject_reason)
            )
            return
        self._ack(Ack(version=plan.version, stage=Stage.RECEIVED))
        now = self._now()
        if plan.not_after is not None and now > plan.not_after:
            self._save()
            self._ack(Ack(version=plan.version, stage=Stage.EXPIRED, reason="not_after has passed"))
            return
        self._plan = plan
        self._pending = [step for step in plan.steps if step.at > now]
        self._save()
        self._ack(Ack(version=plan.version, stage=Stage.ARMED))
        current = plan.step_at(now)
        if current is not None:
            self._apply(plan.version, current)
        self._arm()

    def _retime(self) -> None:
        """The time the device applies by moved (a correction began or ended): the
        steps still to come are those after the new now, and the step that holds at the
        new now is shown, if it is not the one shown (a step applied early by a clock
        that ran ahead is taken back, and applied again at its instant)."""
        plan = self._plan
        if plan is None:
            return
        now = self._now()
        self._pending = [step for step in plan.steps if step.at > now]
        current = plan.step_at(now)
        if current is not None and self._last_applied != (plan.version, current.at):
            self._apply(plan.version, current)
        self._arm()

    def _arm(self) -> None:
        """Set the one step timer to the next pending step (or none)."""
        if self._step_timer is not None:
            self._step_timer.cancel()
            self._step_timer = None
        if self._pending:
            # the step's instant on the device's own clock
            at = self._pending[0].at - self.controller_time.correction()
            self._step_timer = self._timers.call_at(at, self._run_due)

    def _run_due(self) -> None:
        self._step_timer = None
        plan = self._plan
        if plan is None or not self._pending:
            return
        now = self._now()
        due = 0
        while due < len(self._pending) and self._pending[due].at <= now:
            due += 1
        if due:
            step = self._pending[due - 1]
            if due > 1:
                log.warning(
                    "device %s: %d steps fell due together; applying the latest",
                    self.device_id,
                    due,
                )
            self._pending = self._pending[due:]
            self._apply(plan.version, step)
        self._arm()

    def _output(self, version: int, step: PlanStep) -> LightState | None:
        """Set the fixture to the step's state; on a fault ack `failed` and return None."""
        try:
            return self.fixture.apply(step.state)
        except Exception as exc:
            log.exception("device %s: the fixture failed", self.device_id)
            reason = (str(exc) or type(exc).__name__)[:MAX_REASON_CHARS]
            self._ack(Ack(version=version, stage=Stage.FAILED, step_at=step.at, reason=reason))
            return None

    def _apply(self, version: int, step: PlanStep) -> None:
        output = self._output(version, step)
        if output is None:
            return
        applied_at = self._now()
        self._last_applied = (version, step.at)
        if self._on_applied is not None:
            try:
                self._on_applied(self.device_id, version, step.at, applied_at, output)
            except Exception:
                log.exception("device %s: could not record an applied step", self.device_id)
        with self._cond:
            self._applied.append((version, step.at))
            self._cond.notify_all()
        # the output is set and stamped now; storing and reporting it wait until every
        # step due at this instant is applied (a host runs thousands of devices on one
        # loop: their outputs change together, their reports follow at once), and, with
        # a light sensor, until the output has settled and the sensor has seen it
        delay = 0.0
        if self.sensor is not None:
            delay = output.transition_s + max(0.0, self.sensor.settle_s)
        self._timers.call_later(
            delay, lambda: self._report_applied(version, step, output, applied_at)
        )

    def _reading(self, version: int, step: PlanStep, output: LightState) -> Reading | None:
        """The sensor's reading of the step's output, if it has one and the step still
        holds (a later step already shows: this reading would be of that one)."""
        if self.sensor is None or self._last_applied != (version, step.at):
            return None
        try:
            return self.sensor.read(output)
        except Exception:
            log.exception("device %s: the light sensor could not be read", self.device_id)
            return None

    def _report_applied(
        self, version: int, step: PlanStep, output: LightState, applied_at: datetime
    ) -> None:
        reading = self._reading(version, step, output)
        self._save()
        log.info(
            "device %s: plan %d step %s applied: %s",
            self.device_id,
            version,
            format_instant(step.at),
            describe(output),
        )
        if reading is not None:
            counts = reading.counts
            log.info(
                "device %s: the light sensor (%s) saw %s at %g%%%s",
                self.device_id,
                reading.sensor,
                reading.color,
                reading.level,
                f" (counts C {counts.c} R {counts.r} G {counts.g} B {counts.b})" if counts else "",
            )
        self._ack(
            Ack(
                version=version,
                stage=Stage.APPLIED,
                step_at=step.at,
                applied_at=applied_at,
                state=output,
                reading=reading,
            )
        )
        self._publish_state()

    def _show_again(self, version: int, step: PlanStep) -> None:
        """At boot: put back the output of the step applied before the reboot."""
        output = self._output(version, step)
        if output is None:
            return
        with self._cond:
            self._resumed = (version, step.at)
            self._cond.notify_all()
        log.info(
            "device %s: plan %d step %s shown again after a restart: %s",
            self.device_id,
            version,
            format_instant(step.at),
            describe(output),
        )

    def _save(self) -> None:
        held = HeldPlan(version=self._version, plan=self._plan, applied=self._last_applied)
        try:
            self.store.save(held)
        except Exception:
            log.exception("device %s: could not store plan %d", self.device_id, held.version)

    # ------------------------------------------------------------------ publishing

    def _ack(self, ack: Ack) -> None:
        ack = ack.model_copy(
            update={"device": self.device_id, "clock_offset_ms": self.controller_time.reported_ms()}
        )
        mode = self.behaviour.ack
        if mode == "never":
            return
        if mode == "late":
            self._timers.call_later(self.behaviour.ack_delay_s, lambda: self._publish_ack(ack))
            return
        self._publish_ack(ack)

    def _publish_ack(self, ack: Ack) -> None:
        self._publish(self._ack_topic, encode(ack), False)
        with self._cond:
            self._acks.append(ack)
            self._cond.notify_all()

    def _publish_state(self) -> None:
        if self.behaviour.ack == "never":
            return
        version, step_at = self._last_applied or (None, None)
        offset = self._reported_offset = self.controller_time.reported_ms()
        state = DeviceState(
            device=self.device_id,
            state=self.fixture.current,
            plan_version=version,
            step_at=step_at,
            reported_at=self._now(),
            firmware=self.firmware,
            clock_offset_ms=offset,
            clock_synced=self._synced(),
        )
        self._publish(self._state_topic, encode(state), True)

    def _synced(self) -> bool | None:
        if self._clock_synced is None:
            return None
        try:
            return self._clock_synced()
        except Exception:
            log.exception("device %s: could not tell whether the clock is synced", self.device_id)
            return None
