"""Device messages -> lifecycle transitions and device reports, a batch at a time.

The intake takes what the inbox holds (fairly across devices, bounded in size), reads
the state of just those devices once, decides every message in arrival order against
that state, and writes the outcome in batched, idempotent writes: the record's events
(steps reported applied, status changes: one insert, duplicates skipped), the device
reports (only the rows that changed) and the lifecycle moves (compare-and-set in the
store). If the database fails, the whole batch is kept and decided again later: nothing
is lost.

Every message is parsed at the edge. Anything wrong is logged with its device and
counted by reason, and the loop carries on: one device's bad message never stops the
controller. Messages from devices that are not registered are ignored (and counted).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from controller.barrier import BARRIER_EVERY_S
from controller.broker.base import Incoming
from controller.clockwatch import ClockWatch
from controller.confirmation import (
    ConfirmedBy,
    compare_reading,
    confirmed_at,
    mismatch_record,
    record_applied,
    refuted,
)
from controller.inbox import Inbox
from controller.lifecycle import FINAL, CommandState, can_move
from controller.metrics import Metrics
from controller.plans import PlanOf, decoded
from controller.store.base import Command, DeviceView, Move, Stores
from controller.store.history import DeviceEvent, EventKind, HistoryStore
from devices.clock import TimeSource
from devices.protocol import (
    MAX_REASON_CHARS,
    Ack,
    DeviceState,
    DeviceStatus,
    Kind,
    PlanStep,
    ProtocolError,
    Stage,
    Topics,
    decode,
)

log = logging.getLogger(__name__)

STAGE_TO_STATE = {
    Stage.RECEIVED: CommandState.RECEIVED,
    Stage.ARMED: CommandState.ARMED,
    Stage.APPLIED: CommandState.APPLIED,
    Stage.FAILED: CommandState.FAILED,
    Stage.REJECTED: CommandState.REJECTED,
    Stage.EXPIRED: CommandState.EXPIRED,
}
CONFIRMABLE = frozenset(
    {
        CommandState.PENDING,
        CommandState.PUBLISHED,
        CommandState.RECEIVED,
        CommandState.ARMED,
        CommandState.UNCONFIRMED,
        CommandState.APPLIED,
        CommandState.DRIFTED,
    }
)
BODIES: dict[Kind, type[Ack] | type[DeviceState] | type[DeviceStatus]] = {
    Kind.ACK: Ack,
    Kind.STATE: DeviceState,
    Kind.STATUS: DeviceStatus,
}
BATCH = 2000
GATHER_S = 0.02
REGISTRY_RECHECK_S = 1.0
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
PARKED = 10_000
ISOLATE_AFTER = 3


@dataclass
class Outcome:
    """What one batch changed, for whoever reacts (public view, reconciler, dispatcher)."""

    devices: set[str] = field(default_factory=set)
    """Devices whose reports or commands changed."""
    drift: bool = False
    """A device left its plan, or holds a version beyond ours: reconcile soon."""
    stale_plans: set[str] = field(default_factory=set)
    """Devices that report an older plan than our newest: publish it again."""
    moves: int = 0
    reports: int = 0


@dataclass
class _Batch:
    """The state of the batch's devices while its messages are decided."""

    views: dict[str, DeviceView]
    latest: dict[str, Command]
    commands: dict[tuple[str, int], Command]
    state: dict[int, CommandState] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    """For the record: steps reported applied, and changes of online status."""
    outcome: Outcome = field(default_factory=Outcome)

    def move(
        self,
        command: Command,
        target: CommandState,
        at: datetime,
        detail: str | None,
        only_from: frozenset[CommandState] | None = None,
    ) -> None:
        current = self.state.get(command.id, command.state)
        if only_from is not None and current not in only_from:
            return
        if not can_move(current, target):
            return
        self.state[command.id] = target
        self.moves.append(Move(command.id, target, at, detail, only_from))
        self.outcome.devices.add(command.device_id)


class Intake:
    def __init__(
        self,
        stores: Stores,
        topics: Topics,
        inbox: Inbox,
        clock: TimeSource,
        metrics: Metrics,
        *,
        batch_size: int = BATCH,
        clock_watch: ClockWatch | None = None,
        history: HistoryStore | None = None,
        plans: PlanOf | None = None,
    ) -> None:
        self.stores = stores
        self.plan_of: PlanOf = plans if plans is not None else decoded
        """A command's plan (the controller's shared `PlanCache`: decoded once)."""
        self._accepted: dict[str, Any] = {}
        """`accepted_messages` by kind: a labelled child is no cheap lookup per message."""
        self.clock_watch = clock_watch
        self.history = history
        """Where the record of steps and status changes goes (none: not kept)."""
        self.topics = topics
        self.inbox = inbox
        self.clock = clock
        self.metrics = metrics
        self.batch_size = batch_size
        self.on_outcome: Callable[[Outcome], None] = lambda _outcome: None
        self.on_message: Callable[[str, Ack | DeviceState | DeviceStatus, bool, datetime], None]
        self.on_message = lambda _device, _body, _retain, _now: None
        """Told of every message of a registered device as it is decided (health)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="intake", daemon=True)
        self._known: set[str] = set()
        self._known_revision: int | None = None
        self._known_checked = -1e18
        self._parked: deque[Incoming] = deque()
        self._registry_moved = False
        self._reread = False
        self._caught_up: datetime | None = None
        self.send_barrier: Callable[[datetime], object] | None = None
        """Sends a catch-up barrier stamped with the time given (controller/barrier.py);
        the intake calls it every BARRIER_EVERY_S. None: no barriers, never caught up."""
        self._barrier_sent = -1e18

    def caught_up_to(self) -> datetime | None:
        """Every message that reached the broker before this time is stored (None: not
        known yet): the newest barrier passed (controller/barrier.py). Decisions that
        rest on a report not having come wait for it."""
        return self._caught_up

    def _barrier_due(self) -> None:
        send = self.send_barrier
        now = self.clock.monotonic()
        if send is None or now - self._barrier_sent < BARRIER_EVERY_S:
            return
        self._barrier_sent = now
        try:
            send(self.clock())
        except Exception:  # the link's problem, never the intake's
            log.exception("intake: could not send a catch-up barrier")

    def _passed(self, barrier: datetime | None) -> None:
        if barrier is not None and (self._caught_up is None or barrier > self._caught_up):
            self._caught_up = barrier

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.wake()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        batch: list[Incoming] = []
        backoff = RETRY_FIRST_S
        failures = 0
        drained: datetime | None = None
        ended = -1e18
        while not self._stop.is_set():
            self._barrier_due()
            if not batch:
                # at most one batch per GATHER_S: a stream of messages (one device's
                # flood, say) is taken in batches, not one transaction per message
                pause = GATHER_S - (self.clock.monotonic() - ended)
                if pause > 0:
                    self._stop.wait(pause)
                batch = self.inbox.take(self.batch_size, timeout=0.2)
                drained = self.inbox.passed
                if not batch and not (self._reread and self._parked):
                    self._passed(drained)
                    continue
            try:
                if failures >= ISOLATE_AFTER:
                    batch = self.isolate(batch)
                else:
                    self.process(batch)
                    batch = []
                ended = self.clock.monotonic()
            except Exception:
                # the database is busy or down: keep the batch, decide it again later
                self.metrics.intake_retries.inc()
                log.exception("intake: could not store %d messages; will retry", len(batch))
            if not batch:
                self.inbox.settle()  # what it took is stored: no longer backlog
                failures, backoff = 0, RETRY_FIRST_S
                self._passed(drained)
                drained = None
                continue
            failures += 1
            self._stop.wait(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    def isolate(self, batch: list[Incoming]) -> list[Incoming]:
        """A batch that keeps failing: store its messages one by one. If none can be
        stored the database is at fault, and the whole batch is kept; otherwise the ones
        that fail on their own are the fault, and are let go (logged and counted), so one
        device's message can never stall the intake for everyone. Returns what to keep."""
        failed: list[Incoming] = []
        for message in batch:
            try:
                self.process([message])
            except Exception:
                failed.append(message)
        if len(failed) == len(batch):
            raise RuntimeError(f"none of {len(batch)} messages could be stored")
        for message in failed:
            self.metrics.dropped_messages.labels(reason="unstorable").inc()
            log.error("intake: letting go of a message on %s that cannot be stored", message.topic)
        return []

    # the batch ------------------------------------------------------------------

    def process(self, messages: list[Incoming]) -> Outcome:
        """Decide and store one batch; raises (changing nothing it cannot redo) when the
        database fails, so the caller can keep the batch and try again."""
        if self._reread:
            self._reread = False
            self._known_checked = -1e18
            self._read_registry()
        parsed = [p for m in messages if (p := self._parse(m)) is not None]
        if self._registry_moved:
            # devices registered since their first messages came: take those in now
            self._registry_moved = False
            parked, self._parked = list(self._parked), deque()
            parsed = [p for m in parked if (p := self._parse(m)) is not None] + parsed
        if not parsed:
            return Outcome()
        device_ids = {device_id for device_id, _, _ in parsed}
        ack_keys = {(d, body.version) for d, body, _ in parsed if isinstance(body, Ack)}
        views = self.stores.reports.views(device_ids)
        batch = _Batch(
            views=dict(views),
            latest=self.stores.outbox.latest(device_ids),
            commands=self.stores.outbox.get(ack_keys) if ack_keys else {},
        )
        now = self.clock()
        for device_id, body, retain in parsed:
            if device_id not in batch.views:
                continue  # registered a moment ago in another process and not yet read
            try:
                self.on_message(device_id, body, retain, now)
            except Exception:  # health is an observer: it never stops the decision
                log.exception("device %s: could not note a message for health", device_id)
            try:
                self._decide(batch, device_id, body, retain, now)
            except Exception:  # one message's trouble never stops the batch
                log.exception("device %s: could not handle a message", device_id)
                self.metrics.rejected_messages.labels(reason="error").inc()
        if batch.events and self.history is not None:
            # first, and idempotent: a batch decided again after a failure below finds
            # its reports already changed and would not tell of its steps a second time
            self.history.add_events(batch.events)
        changed = [v for d, v in batch.views.items() if v != views.get(d)]
        batch.outcome.reports = self.stores.reports.save(changed) if changed else 0
        batch.outcome.devices.update(v.id for v in changed)
        if batch.moves:
            results = self.stores.outbox.move(batch.moves)
            batch.outcome.moves = sum(results)
        self.metrics.intake_batches.inc()
        self.on_outcome(batch.outcome)
        return batch.outcome

    def _parse(
        self, message: Incoming
    ) -> tuple[str, Ack | DeviceState | DeviceStatus, bool] | None:
        where = self.topics.parse(message.topic)
        if where is None or where.kind is Kind.PLAN:
            return None
        device_id = where.device_id
        if not self._registered(device_id):
            self._park(message)
            log.debug("holding %s from unregistered device %s", where.kind, device_id)
            return None
        if not message.payload and message.retain:
            return None  # a cleared retained message
        try:
            body = decode(BODIES[where.kind], message.payload)
        except ProtocolError as exc:
            self._reject(device_id, exc.kind, exc.message)
            return None
        if body.device is not None and body.device != device_id:
            self._reject(device_id, "device_mismatch", f"body names device {body.device!r}")
            return None
        counter = self._accepted.get(where.kind.value)
        if counter is None:
            counter = self._accepted[where.kind.value] = self.metrics.accepted_messages.labels(
                kind=where.kind.value
            )
        counter.inc()
        return device_id, body, message.retain

    def _registered(self, device_id: str) -> bool:
        """Registered devices, read again when an unknown id shows up and the registry's
        revision moved (checked at most once a second: a flood from unregistered
        accounts must not turn into a flood of queries)."""
        if device_id in self._known:
            return True
        self._read_registry()
        return device_id in self._known

    def _read_registry(self) -> None:
        mono = self.clock.monotonic()
        if mono - self._known_checked < REGISTRY_RECHECK_S and self._known_revision is not None:
            return
        self._known_checked = mono
        revision = self.stores.registry.revision()
        if revision != self._known_revision:
            self._registry_moved = self._known_revision is not None or bool(self._parked)
            self._known_revision = revision
            self._known = self.stores.registry.device_ids()

    def _park(self, message: Incoming) -> None:
        """Hold a message from an id not (yet) registered: a device registered a moment
        ago by another process may speak before this process has read the registry.
        When the registry next changes, the held messages are taken in; the oldest are
        let go (and counted) past `PARKED`."""
        self.metrics.rejected_messages.labels(reason="unregistered").inc()
        self._parked.append(message)
        if len(self._parked) > PARKED:
            self._parked.popleft()
            self.metrics.dropped_messages.labels(reason="unregistered_overflow").inc()

    def forget_registry(self) -> None:
        """The registry changed: read it again before the next batch, and take in the
        messages held for ids that were not registered."""
        self._reread = True
        self.inbox.wake()

    def _reject(self, device_id: str, reason: str, detail: str) -> None:
        self.metrics.rejected_messages.labels(reason=reason).inc()
        log.warning("device %s: refused message (%s): %s", device_id, reason, detail)

    # one message ------------------------------------------------------------------

    def _decide(
        self,
        batch: _Batch,
        device_id: str,
        body: Ack | DeviceState | DeviceStatus,
        retain: bool,
        now: datetime,
    ) -> None:
        view = batch.views[device_id]
        if not retain and isinstance(body, Ack | DeviceState) and view.online is not True:
            # a live message proves the device is connected, whatever status we missed
            view = batch.views[device_id] = replace(view, online=True, status_at=now)
            batch.events.append(DeviceEvent(device_id, EventKind.ONLINE, now))
        if (
            self.clock_watch is not None
            and isinstance(body, Ack | DeviceState)
            and body.clock_offset_ms is not None
        ):
            self.clock_watch.seen(device_id, body.clock_offset_ms)
        if isinstance(body, Ack):
            self._ack(batch, device_id, body, now)
        elif isinstance(body, DeviceStatus):
            firmware = body.firmware or view.firmware
            if (view.online, view.firmware) != (body.online, firmware):
                batch.views[device_id] = replace(
                    view, online=body.online, firmware=firmware, status_at=now
                )
            if view.online is not body.online:
                kind = EventKind.ONLINE if body.online else EventKind.OFFLINE
                batch.events.append(DeviceEvent(device_id, kind, now))
            self._birth(batch, device_id, body)
        else:
            if (view.reported_state, view.reported_at) != (
                state := body.state.model_dump(mode="json"),
                body.reported_at,
            ):
                batch.views[device_id] = replace(
                    view, reported_state=state, reported_at=body.reported_at
                )
            self._state(batch, device_id, body, now)

    def _birth(self, batch: _Batch, device_id: str, status: DeviceStatus) -> None:
        """A device that comes online holding an older plan than our newest (it lost
        it, or the broker's retained copy is older) gets the newest again at once."""
        if not status.online or status.plan_version is None:
            return
        latest = batch.latest.get(device_id)
        if latest is None or status.plan_version >= latest.version:
            return
        if batch.state.get(latest.id, latest.state) not in FINAL:
            batch.outcome.stale_plans.add(device_id)

    def _record_applied(
        self,
        batch: _Batch,
        device_id: str,
        version: int,
        step: PlanStep,
        state: dict[str, object],
        applied_at: datetime,
        now: datetime,
        source: str,
        test: bool = False,
        by: ConfirmedBy = ConfirmedBy.ECHO,
        reading: dict[str, object] | None = None,
    ) -> bool:
        """Keep the newest step the device reports applied: newest version, then latest
        step, with how it was confirmed (`by`). A repeated report of the same step keeps
        the first (true) applied time. True when the record changed.

        Every step reported applied is also an event of the record (`batch.events`),
        older ones too (an ack overtaken by the next step's); a report of the step
        already kept as the newest is not (the state report a device repeats on every
        controller birth costs nothing). A test flash's steps are not (`test`): the record
        is of what campaigns lit."""
        view = batch.views[device_id]
        if not test and (view.applied_version, view.applied_step_at) != (version, step.at):
            batch.events.append(
                DeviceEvent(
                    device_id,
                    EventKind.STEP,
                    now,
                    version=version,
                    step_at=step.at,
                    applied_at=applied_at,
                    state=dict(state),
                    source=source,
                    confirmed_by=by.value,
                    reading=reading,
                )
            )
        newer = (
            view.applied_version is None
            or version > view.applied_version
            or (
                version == view.applied_version
                and (view.applied_step_at is None or step.at > view.applied_step_at)
            )
        )
        if newer:
            batch.views[device_id] = record_applied(
                view, version, step.at, dict(state), applied_at, by
            )
        elif (
            (view.applied_version, view.applied_step_at) == (version, step.at)
            and by is ConfirmedBy.SENSOR
            and view.confirmed_by != by.value
        ):
            # the same step, now measured (its state report came first): keep the
            # first applied time, take the stronger confirmation
            batch.views[device_id] = record_applied(
                view,
                version,
                step.at,
                view.applied_state or dict(state),
                view.applied_at or applied_at,
                by,
            )
            return True
        return newer

    def _ack(self, batch: _Batch, device_id: str, ack: Ack, now: datetime) -> None:
        command = batch.commands.get((device_id, ack.version))
        if command is None:
            self._reject(device_id, "unknown_version", f"ack for version {ack.version}")
            return
        target = STAGE_TO_STATE[ack.stage]
        if ack.stage is not Stage.APPLIED:
            batch.move(command, target, now, ack.reason)
            return
        assert ack.step_at and ack.applied_at and ack.state  # checked by the codec
        step = next((s for s in self.plan_of(command).steps if s.at == ack.step_at), None)
        if step is None:
            self._reject(device_id, "unknown_step", f"v{ack.version} has no step {ack.step_at}")
            return
        if not step.state.matches(ack.state):
            self._reject(device_id, "state_mismatch", f"applied {ack.state}, not {step.state}")
            batch.move(command, CommandState.FAILED, now, "applied state differs")
            return
        by = ConfirmedBy.ECHO
        if ack.reading is not None:
            reason = compare_reading(step.state, ack.reading)
            if reason is not None:
                self._mismatch(batch, device_id, command, step, ack, reason, now)
                return
            by = ConfirmedBy.SENSOR
        changed = self._record_applied(
            batch,
            device_id,
            ack.version,
            step,
            ack.state.model_dump(mode="json"),
            ack.applied_at,
            now,
            "ack",
            test=self.plan_of(command).test,
            by=by,
            reading=ack.reading.model_dump(mode="json", exclude_none=True) if ack.reading else None,
        )
        if changed or batch.state.get(command.id, command.state) is not CommandState.APPLIED:
            batch.move(
                command,
                CommandState.APPLIED,
                now,
                f"step {ack.step_at.isoformat()} applied at {ack.applied_at.isoformat()}",
            )

    def _mismatch(
        self,
        batch: _Batch,
        device_id: str,
        command: Command,
        step: PlanStep,
        ack: Ack,
        reason: str,
        now: datetime,
    ) -> None:
        """The device applied the step but its light sensor saw something else: the step
        is not confirmed. The device view keeps the mismatch (so neither the echo in its
        state report nor the public view takes it for confirmed), the record gets a
        `mismatch` event with the figures, and the command turns UNCONFIRMED with the
        reason (the reconciler sends the plan again later, as for any unconfirmed step)."""
        assert ack.reading is not None and ack.applied_at is not None
        view = batch.views[device_id]
        log.warning("device %s: v%d %s", device_id, ack.version, reason)
        if refuted(view, ack.version, step.at):
            return  # told already (a repeated ack)
        reading = ack.reading.model_dump(mode="json", exclude_none=True)
        record = mismatch_record(step.state, ack.reading, reason, step.at)
        batch.views[device_id] = replace(
            view,
            mismatch_version=ack.version,
            mismatch_step_at=step.at,
            mismatch={**record, "received_at": now.isoformat()},
        )
        batch.events.append(
            DeviceEvent(
                device_id,
                EventKind.MISMATCH,
                now,
                version=ack.version,
                step_at=step.at,
                applied_at=ack.applied_at,
                state=ack.state.model_dump(mode="json") if ack.state else None,
                source="ack",
                reading=reading,
                reason=reason[:MAX_REASON_CHARS],
            )
        )
        moved_on = view.applied_version == ack.version and (
            view.applied_step_at is not None and view.applied_step_at > step.at
        )
        if not moved_on:  # a later step of the version already speaks for the command
            batch.move(command, CommandState.UNCONFIRMED, now, reason[:MAX_REASON_CHARS])

    def _state(self, batch: _Batch, device_id: str, report: DeviceState, now: datetime) -> None:
        """A state report is evidence too: of a step applied (its ack may have been lost,
        say while the controller was down), of a device without its newest plan, or of
        drift from the plan it applied."""
        latest = batch.latest.get(device_id)
        newest = latest.version if latest is not None else 0
        view = batch.views[device_id]
        if report.plan_version is not None and report.plan_version > newest:
            # it holds a version this database never issued (a restore, a re-registered
            # device): it would ignore ours, so the next version must go past its own
            if report.plan_version > view.version_floor:
                batch.views[device_id] = replace(view, version_floor=report.plan_version)
                log.warning(
                    "device %s holds plan version %d, beyond ours (%d); re-planning above it",
                    device_id,
                    report.plan_version,
                    newest,
                )
                batch.outcome.drift = True
            return
        if latest is None:
            return
        current = batch.state.get(latest.id, latest.state)
        if report.plan_version is None or report.plan_version < latest.version:
            if current not in FINAL:
                batch.outcome.stale_plans.add(device_id)
            return
        if report.step_at is not None:
            step = next((s for s in self.plan_of(latest).steps if s.at == report.step_at), None)
            if (
                step is not None
                and step.state.matches(report.state)
                and not refuted(view, latest.version, step.at)
            ):
                changed = self._record_applied(
                    batch,
                    device_id,
                    latest.version,
                    step,
                    report.state.model_dump(mode="json"),
                    report.reported_at,
                    now,
                    "state",
                    test=self.plan_of(latest).test,
                )
                if changed or current is not CommandState.APPLIED:
                    batch.move(
                        latest,
                        CommandState.APPLIED,
                        now,
                        f"state report: step {report.step_at.isoformat()} in force",
                        only_from=CONFIRMABLE,
                    )
        self._check_drift(batch, device_id, latest, report, now)

    def _check_drift(
        self, batch: _Batch, device_id: str, latest: Command, report: DeviceState, now: datetime
    ) -> None:
        """An applied plan whose device now reports other output has DRIFTED.

        Only a report about the newest version counts, compared with the step that
        version had in force at the report's own time, so a report racing a step
        boundary is judged against the step the device was showing.
        """
        if batch.state.get(latest.id, latest.state) is not CommandState.APPLIED:
            return
        if report.plan_version != latest.version:
            return
        step = self.plan_of(latest).step_at(report.reported_at)
        if step is None:
            return
        view = batch.views[device_id]
        if confirmed_at(
            version=latest.version,
            step=step,
            applied_version=view.applied_version,
            applied_step_at=view.applied_step_at,
            applied_state=view.applied_state,
            applied_at=view.applied_at,
            reported_state=report.state,
            reported_at=report.reported_at,
        ) is not None or step.state.matches(report.state):
            return
        self.metrics.drifted.inc()
        batch.move(
            latest,
            CommandState.DRIFTED,
            now,
            f"reports {report.state.model_dump_json()} instead of the step at {step.at}",
        )
        log.warning("device %s drifted from plan version %d", device_id, latest.version)
        batch.outcome.drift = True
