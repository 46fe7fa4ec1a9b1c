"""Third-party devices' reports -> device reports and lifecycle moves.

The broker hands over every message on a registered third-party device's report topics
(`controller/adapter_devices.py` routes each by an exact lookup). Here, a batch at a time:

- each message is read by its device's adapter (`parse`); a malformed one is counted
  (`illuminate_adapter_messages_malformed`) and skipped, whatever its bytes;
- the state pieces a device reports are folded into one `Reported` per device
  (`Reported.merged`);
- availability sets the device online or offline. A device that comes (back) online is
  sent the current desired state again (`Outcome.resend`): a live command is not
  retained, so one sent while it was away never reached it;
- a report that `confirms` the target of the device's newest live command turns it
  APPLIED, with the adapter's strength recorded (`record_confirmation`). A wrong colour
  never confirms. Where the adapter's state request brings a stronger confirmation (a
  Zigbee2MQTT `/get` reads the light back), it is asked for once the echo confirmed,
  and the next matching report is recorded with that strength;
- a report that no longer matches an APPLIED command's target turns it DRIFTED: the
  reconciler sends the desired state again.

If the database fails, the batch is kept and decided again later (message by message
after a few failures, letting go only of those that fail alone), as the native intake
does; what waits here counts in the intake backlog (/readyz, /metrics).

The device's report fields are written as the native intake writes them (applied
version and step, applied state, reported state), so the public page, the reconciler
and the record judge third-party devices by the same rule (`controller/confirmation.py`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from controller.adapter_devices import AdapterDevices
from controller.broker.base import Incoming
from controller.confirmation import confirmed_by, record_applied
from controller.inbox import Backlog
from controller.lifecycle import FINAL, CommandState, can_move
from controller.metrics import Metrics
from controller.plans import PlanOf, decoded
from controller.store.base import Command, DeviceView, Move, Stores
from controller.store.history import DeviceEvent, EventKind, HistoryStore
from devices.adapters import (
    Adapter,
    Availability,
    Malformed,
    OtherColour,
    Report,
    Reported,
    Strength,
    combined,
)
from devices.clock import TimeSource
from devices.protocol import PlanStep

log = logging.getLogger(__name__)

MAX_QUEUED = 50_000
BATCH = 2000
RETRY_S = 0.1
RETRY_MAX_S = 5.0
ISOLATE_AFTER = 3
STRENGTHS = tuple(Strength)
"""Weakest first."""


@dataclass
class Outcome:
    devices: set[str] = field(default_factory=set)
    """Devices whose reports or commands changed (the public view renders again)."""
    resend: set[str] = field(default_factory=set)
    """Devices that came online: send them their newest command again."""
    state_requests: dict[str, int] = field(default_factory=dict)
    """Devices to ask for a fresh report (the version it is for)."""
    drift: bool = False
    """A device left its confirmed state: reconcile soon."""


@dataclass
class _Batch:
    views: dict[str, DeviceView]
    latest: dict[str, Command]
    state: dict[int, CommandState] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)

    def move(self, command: Command, target: CommandState, at: datetime, detail: str) -> bool:
        current = self.state.get(command.id, command.state)
        if not can_move(current, target):
            return False
        self.state[command.id] = target
        self.moves.append(Move(command.id, target, at, detail))
        self.outcome.devices.add(command.device_id)
        return True


def record_confirmation(
    batch: _Batch,
    device_id: str,
    command: Command,
    step: PlanStep,
    strength: Strength,
    now: datetime,
) -> None:
    """The one place a third-party device's confirmation is recorded: the device's
    applied step and state with how strong the confirmation is (`confirmed_by`: echo or
    readback, `controller/confirmation.py`), the record's step event, and the command
    APPLIED (the audit log's detail says `confirmed by echo|readback` too)."""
    view = batch.views[device_id]
    state = step.state.model_dump(mode="json")
    by = confirmed_by(strength)
    again = (view.applied_version, view.applied_step_at) == (command.version, step.at)
    first_at = view.applied_at if again and view.applied_at is not None else now
    view = record_applied(view, command.version, step.at, state, first_at, by)
    batch.views[device_id] = replace(view, reported_state=state, reported_at=now)
    if not again and not decoded(command).test:  # a stronger report of it: the same step
        batch.events.append(
            DeviceEvent(
                device_id,
                EventKind.STEP,
                now,
                version=command.version,
                step_at=step.at,
                applied_at=now,
                state=dict(state),
                source="state",
                confirmed_by=by.value,
            )
        )
    batch.move(command, CommandState.APPLIED, now, f"confirmed by {by.value}")


def describe(adapter: Adapter, reported: Reported) -> dict[str, Any]:
    """What a device reported, for staff (never a valid native state: it confirms nothing
    by the native rule)."""
    colour = reported.colour
    shown: Any = None
    if isinstance(colour, OtherColour):
        shown = colour.description
    elif colour is not None:
        shown = [round(float(c), 4) for c in colour]
    return {
        "adapter": adapter.name,
        "on": reported.on,
        "colour": shown,
        "brightness": reported.brightness,
        "raw": {str(k): v for k, v in reported.raw.items()},
    }


def _stronger(a: Strength, b: Strength) -> bool:
    return STRENGTHS.index(a) > STRENGTHS.index(b)


class AdapterIntake:
    """Takes third-party devices' messages on the broker's thread (`put`), decides them
    in batches on its own."""

    def __init__(
        self,
        stores: Stores,
        devices: AdapterDevices,
        clock: TimeSource,
        metrics: Metrics,
        *,
        history: HistoryStore | None = None,
        max_queued: int = MAX_QUEUED,
        plans: PlanOf | None = None,
    ) -> None:
        self.stores = stores
        self.plan_of: PlanOf = plans if plans is not None else decoded
        """A command's plan (the controller's shared `PlanCache`: decoded once)."""
        self.devices = devices
        self.clock = clock
        self.metrics = metrics
        self.history = history
        self.max_queued = max_queued
        self.on_outcome: Callable[[Outcome], None] = lambda _outcome: None
        self.on_seen: Callable[[str, datetime], None] = lambda _device, _now: None
        """Told of every live (not retained) message of a device taken in (health)."""
        self.monotonic = clock.monotonic
        self._queue: deque[tuple[Incoming, float]] = deque()
        """Messages with their arrival (monotonic), oldest first."""
        self._taken = Backlog(0, None)
        self._ready = threading.Condition()
        self._puts = 0
        """Messages put so far."""
        self._gone = 0
        """Messages taken or let go so far (the queue is first in, first out)."""
        self._barriers: deque[tuple[int, datetime]] = deque()
        """Catch-up barriers (controller/barrier.py): messages put before each, its time."""
        self._caught_up: datetime | None = None
        self._reported: dict[str, Reported] = {}
        self._readback: dict[str, int] = {}
        self._availability: dict[str, dict[str, Availability]] = {}
        """Per device, what each of its availability topics last said."""
        """Devices asked for a stronger report after an echo, and the version it is for."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="adapter-intake", daemon=True)

    # the broker's thread ------------------------------------------------------------

    def put(self, message: Incoming) -> None:
        arrived = self.monotonic()
        with self._ready:
            if len(self._queue) >= self.max_queued:
                self._queue.popleft()
                self._gone += 1
                self.metrics.dropped_messages.labels(reason="adapter_queue_full").inc()
            self._queue.append((message, arrived))
            self._puts += 1
            self._ready.notify()

    def put_barrier(self, at: datetime) -> None:
        """A catch-up barrier came, in order with the vendor messages."""
        with self._ready:
            self._barriers.append((self._puts, at))
            self._ready.notify()

    def caught_up_to(self) -> datetime | None:
        """Every vendor message that reached the broker before this time is stored (None:
        not known yet): the newest barrier passed, as `Intake.caught_up_to`."""
        return self._caught_up

    def backlog(self) -> Backlog:
        """Received and not stored yet: waiting here, and the batch being stored."""
        with self._ready:
            oldest = self._queue[0][1] if self._queue else None
            taken = self._taken
            if taken.oldest_at is not None and (oldest is None or taken.oldest_at < oldest):
                oldest = taken.oldest_at
            return Backlog(len(self._queue) + taken.count, oldest)

    # the thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _take(self, timeout: float) -> tuple[list[Incoming], int]:
        """A batch, and how many messages are gone from the queue with it."""
        with self._ready:
            if not self._queue and not self._barriers:
                self._ready.wait(timeout)
            out: list[tuple[Incoming, float]] = []
            while self._queue and len(out) < BATCH:
                out.append(self._queue.popleft())
            self._gone += len(out)
            self._taken = Backlog(len(out), out[0][1] if out else None)
            return [message for message, _ in out], self._gone

    def _pass_barriers(self, gone: int) -> None:
        """Everything up to the `gone`-th message is stored: the barriers before it pass."""
        with self._ready:
            while self._barriers and self._barriers[0][0] <= gone:
                self._caught_up = self._barriers.popleft()[1]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch, gone = self._take(0.5)
            failures = 0
            while batch and not self._stop.is_set():
                try:
                    if failures >= ISOLATE_AFTER:
                        batch = self._isolate(batch)
                    else:
                        self.process(batch)
                        batch = []
                except Exception:
                    # the database is busy or down: keep the batch, decide it again later
                    failures += 1
                    self.metrics.intake_retries.inc()
                    log.exception("adapter intake: could not store %d messages", len(batch))
                    self._stop.wait(min(RETRY_S * 2**failures, RETRY_MAX_S))
            if not batch:
                self._pass_barriers(gone)
            with self._ready:
                self._taken = Backlog(0, None)

    def _isolate(self, batch: list[Incoming]) -> list[Incoming]:
        """A batch that keeps failing, message by message: if none can be stored the
        database is at fault (keep them all); else let go of the ones that fail."""
        failed = []
        for message in batch:
            try:
                self.process([message])
            except Exception:
                failed.append(message)
        if len(failed) == len(batch):
            raise RuntimeError(f"none of {len(batch)} third-party messages could be stored")
        self.metrics.dropped_messages.labels(reason="unstorable").inc(len(failed))
        return []

    # a batch (the unit tests call it directly) -------------------------------------

    def process(self, messages: list[Incoming]) -> Outcome:
        self.devices.refresh()
        items: list[tuple[str, Adapter, Report, bool, str]] = []
        taken: Counter[str] = Counter()
        for message in messages:
            routes = self.devices.route(message.topic)
            if not routes:
                self.metrics.rejected_messages.labels(reason="unrouted").inc()
                continue
            for device_id, adapter in routes:
                parsed = adapter.parse(message.topic, message.payload)
                if isinstance(parsed, Malformed):
                    self.metrics.adapter_malformed.labels(adapter=adapter.name).inc()
                    log.warning(
                        "device %s: malformed %s message on %s: %s",
                        device_id,
                        adapter.name,
                        message.topic,
                        parsed.reason[:200],
                    )
                    continue
                if isinstance(parsed, Report):
                    taken[adapter.name] += 1
                    items.append((device_id, adapter, parsed, message.retain, message.topic))
        for name, count in taken.items():  # once per batch: a labelled child is no cheap lookup
            self.metrics.adapter_messages.labels(adapter=name).inc(count)
        if not items:
            return Outcome()
        ids = {device_id for device_id, _, _, _, _ in items}
        views = self.stores.reports.views(ids)
        batch = _Batch(views=dict(views), latest=self.stores.outbox.latest(ids))
        now = self.clock()
        for device_id, adapter, report, retain, topic in items:
            if device_id not in batch.views:
                continue
            if not retain:
                try:
                    self.on_seen(device_id, now)
                except Exception:  # health is an observer: it never stops the decision
                    log.exception("device %s: could not note a message for health", device_id)
            try:
                self._decide(batch, device_id, adapter, report, retain, topic, now)
            except Exception:  # one message's trouble never stops the batch
                log.exception("device %s: could not handle a %s message", device_id, adapter.name)
                self.metrics.rejected_messages.labels(reason="error").inc()
        if batch.events and self.history is not None:
            self.history.add_events(batch.events)
        changed = [v for d, v in batch.views.items() if v != views.get(d)]
        if changed:
            self.stores.reports.save(changed)
            batch.outcome.devices.update(v.id for v in changed)
        if batch.moves:
            self.stores.outbox.move(batch.moves)
        self.on_outcome(batch.outcome)
        return batch.outcome

    # one message ---------------------------------------------------------------------

    def _decide(
        self,
        batch: _Batch,
        device_id: str,
        adapter: Adapter,
        report: Report,
        retain: bool,
        topic: str,
        now: datetime,
    ) -> None:
        if report.availability is not None:
            # each availability topic has its say (a light and its bridge): `combined`
            heard = self._availability.setdefault(device_id, {})
            heard[topic] = report.availability
            self._online(batch, device_id, combined(heard) is Availability.ONLINE, now)
        elif not retain and batch.views[device_id].online is not True:
            # a live message proves the device is connected, whatever status we missed
            heard = self._availability.get(device_id, {})
            for source in heard:
                heard[source] = Availability.ONLINE
            self._online(batch, device_id, True, now)
        if report.reply is not None:
            latest = batch.latest.get(device_id)
            if latest is not None and report.reply.ref == latest.version:
                if report.reply.accepted:
                    batch.move(latest, CommandState.RECEIVED, now, "the device accepted it")
                else:
                    reason = report.reply.reason or "refused by the device"
                    batch.move(latest, CommandState.FAILED, now, reason[:200])
        if report.state is not None:
            known = self._reported.get(device_id, Reported())
            folded = self._reported[device_id] = known.merged(report.state)
            self._judge(batch, device_id, adapter, folded, now)

    def _online(self, batch: _Batch, device_id: str, online: bool, now: datetime) -> None:
        view = batch.views[device_id]
        if view.online is online:
            return
        batch.views[device_id] = replace(view, online=online, status_at=now)
        batch.events.append(
            DeviceEvent(device_id, EventKind.ONLINE if online else EventKind.OFFLINE, now)
        )
        if online:
            batch.outcome.resend.add(device_id)
        else:
            self._reported.pop(device_id, None)  # what it showed before is not known now

    def _judge(
        self, batch: _Batch, device_id: str, adapter: Adapter, folded: Reported, now: datetime
    ) -> None:
        view = batch.views[device_id]
        latest = batch.latest.get(device_id)
        step: PlanStep | None = None
        if latest is not None:
            plan = self.plan_of(latest)
            step = plan.step_at(now) or plan.steps[0]
        current = batch.state.get(latest.id, latest.state) if latest is not None else None
        if latest is None or step is None or current in FINAL:
            self._note(batch, device_id, adapter, folded, now)
            return
        if adapter.confirms(step.state, folded):
            confirmed = (view.applied_version, view.applied_step_at) == (latest.version, step.at)
            if not confirmed or current is not CommandState.APPLIED:
                record_confirmation(batch, device_id, latest, step, adapter.strength, now)
                request = adapter.state_request(ref=latest.version)
                if request is not None and _stronger(request.strength, adapter.strength):
                    self._readback[device_id] = latest.version
                    batch.outcome.state_requests[device_id] = latest.version
            elif self._readback.get(device_id) == latest.version:
                request = adapter.state_request(ref=latest.version)
                del self._readback[device_id]
                if request is not None:
                    record_confirmation(batch, device_id, latest, step, request.strength, now)
            elif view.reported_state != step.state.model_dump(mode="json"):
                batch.views[device_id] = replace(
                    view, reported_state=step.state.model_dump(mode="json"), reported_at=now
                )
            return
        self._note(batch, device_id, adapter, folded, now)
        applied = (view.applied_version, view.applied_step_at) == (latest.version, step.at)
        drifted = current is CommandState.APPLIED and applied
        if drifted and batch.move(latest, CommandState.DRIFTED, now, "it reports other output"):
            self.metrics.drifted.inc()
            batch.outcome.drift = True
            log.warning("device %s drifted from v%d", device_id, latest.version)

    def _note(
        self, batch: _Batch, device_id: str, adapter: Adapter, folded: Reported, now: datetime
    ) -> None:
        """Keep what the device reported (it confirms nothing as it is)."""
        view = batch.views[device_id]
        shown = describe(adapter, folded)
        if view.reported_state != shown:
            batch.views[device_id] = replace(view, reported_state=shown, reported_at=now)
