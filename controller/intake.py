"""Device messages -> lifecycle transitions and device reports.

Every message is parsed at the edge. Anything wrong is logged with its device and
counted by reason, and the loop carries on: one device's bad message never stops the
controller. Messages from devices that are not registered are ignored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from controller.broker.link import Incoming
from controller.lifecycle import FINAL, CommandState
from controller.metrics import Metrics
from controller.store.repo import Store
from devices.clock import Clock
from devices.protocol import (
    Ack,
    DeviceState,
    DeviceStatus,
    Kind,
    Plan,
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

_FINAL_VALUES = frozenset(state.value for state in FINAL)
_CONFIRMABLE = frozenset(
    {
        CommandState.PENDING,
        CommandState.PUBLISHED,
        CommandState.RECEIVED,
        CommandState.ARMED,
        CommandState.UNCONFIRMED,
    }
)

BODIES: dict[Kind, type[Ack] | type[DeviceState] | type[DeviceStatus]] = {
    Kind.ACK: Ack,
    Kind.STATE: DeviceState,
    Kind.STATUS: DeviceStatus,
}


class Intake:
    def __init__(
        self,
        store: Store,
        topics: Topics,
        inbox: queue.Queue[Incoming],
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.topics = topics
        self.inbox = inbox
        self.clock = clock
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="intake", daemon=True)
        self._known: set[str] = set()
        self._known_at = -1e9
        self._known_generation = -1
        self.on_drift: Callable[[], None] = lambda: None
        self.on_stale_plan: Callable[[str], None] = lambda _device_id: None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(message)
            except Exception:
                log.exception("could not handle a message on %s", message.topic)
                self.metrics.rejected_messages.labels(reason="error").inc()

    def _registered(self, device_id: str) -> bool:
        """Registered devices, re-read when an unknown id shows up: at once after a
        registration in this process, else at most once a second (a flood from
        unregistered accounts must not turn into a flood of queries)."""
        if device_id not in self._known and (
            self._known_generation != self.store.registry_generation
            or time.monotonic() - self._known_at > 1.0
        ):
            self._known_generation = self.store.registry_generation
            self._known = self.store.device_ids()
            self._known_at = time.monotonic()
        return device_id in self._known

    def _reject(self, device_id: str, reason: str, detail: str) -> None:
        self.metrics.rejected_messages.labels(reason=reason).inc()
        log.warning("device %s: refused message (%s): %s", device_id, reason, detail)

    def handle(self, message: Incoming) -> None:
        where = self.topics.parse(message.topic)
        if where is None or where.kind is Kind.PLAN:
            return
        device_id = where.device_id
        if not self._registered(device_id):
            self.metrics.rejected_messages.labels(reason="unregistered").inc()
            log.debug("ignoring %s from unregistered device %s", where.kind, device_id)
            return
        if not message.payload and message.retain:
            return  # a cleared retained message
        try:
            body = decode(BODIES[where.kind], message.payload)
        except ProtocolError as exc:
            self._reject(device_id, exc.kind, exc.message)
            return
        if body.device is not None and body.device != device_id:
            self._reject(device_id, "device_mismatch", f"body names device {body.device!r}")
            return
        self.metrics.accepted_messages.labels(kind=where.kind.value).inc()
        now = self.clock()
        if not message.retain and where.kind in (Kind.ACK, Kind.STATE):
            self.store.mark_online(device_id, now)
        if isinstance(body, Ack):
            self._ack(device_id, body)
        elif isinstance(body, DeviceStatus):
            self.store.record_status(device_id, body.online, body.firmware, now)
        else:
            self.store.record_state(device_id, body.state.model_dump(mode="json"), now)
            self._state(device_id, body)

    def _ack(self, device_id: str, ack: Ack) -> None:
        row = self.store.command(device_id, ack.version)
        if row is None:
            self._reject(device_id, "unknown_version", f"ack for version {ack.version}")
            return
        now = self.clock()
        target = STAGE_TO_STATE[ack.stage]
        detail = ack.reason
        if ack.stage is Stage.APPLIED:
            assert ack.step_at and ack.applied_at and ack.state  # checked by the codec
            step = next((s for s in decode(Plan, row.payload).steps if s.at == ack.step_at), None)
            if step is None:
                self._reject(device_id, "unknown_step", f"v{ack.version} has no step {ack.step_at}")
                return
            if not step.state.matches(ack.state):
                self._reject(device_id, "state_mismatch", f"applied {ack.state}, not {step.state}")
                self.store.move(row.id, CommandState.FAILED, now, "applied state differs")
                return
            detail = f"step {ack.step_at.isoformat()} applied at {ack.applied_at.isoformat()}"
            self.store.record_applied(
                device_id,
                ack.version,
                ack.step_at,
                ack.state.model_dump(mode="json"),
                ack.applied_at,
            )
        self.store.move(row.id, target, now, detail)

    def _state(self, device_id: str, report: DeviceState) -> None:
        """A state report is evidence too: of a step applied (its ack may have been lost,
        say while the controller was down), of a device without its newest plan, or of
        drift from the plan it applied."""
        latest = self.store.latest_command(device_id)
        newest = latest.version if latest is not None else 0
        if report.plan_version is not None and report.plan_version > newest:
            # it holds a version this database never issued (a restore, a re-registered
            # device): it would ignore ours, so the next version must go past its own
            if self.store.raise_version_floor(device_id, report.plan_version):
                log.warning(
                    "device %s holds plan version %d, beyond ours (%d); re-planning above it",
                    device_id,
                    report.plan_version,
                    newest,
                )
                self.on_drift()
            return
        if latest is None:
            return
        if report.plan_version is None or report.plan_version < latest.version:
            if latest.state not in _FINAL_VALUES:
                self.on_stale_plan(device_id)
            return
        if report.plan_version == latest.version and report.step_at is not None:
            step = next(
                (s for s in decode(Plan, latest.payload).steps if s.at == report.step_at), None
            )
            if step is not None and step.state.matches(report.state):
                self.store.record_applied(
                    device_id,
                    latest.version,
                    report.step_at,
                    report.state.model_dump(mode="json"),
                    report.reported_at,
                )
                self.store.move(
                    latest.id,
                    CommandState.APPLIED,
                    self.clock(),
                    f"state report: step {report.step_at.isoformat()} in force",
                    only_from=_CONFIRMABLE,
                )
        self._check_drift(device_id, report)

    def _check_drift(self, device_id: str, report: DeviceState) -> None:
        """An applied plan whose device now reports other output has DRIFTED.

        Only a report about the newest version counts, compared with the step that
        version had in force at the report's own time, so a report racing a step
        boundary is judged against the step the device was showing.
        """
        row = self.store.latest_command(device_id)
        if row is None or row.state != CommandState.APPLIED.value:
            return
        if report.plan_version != row.version:
            return
        step = decode(Plan, row.payload).step_at(report.reported_at)
        if step is None or step.state.matches(report.state):
            return
        self.metrics.drifted.inc()
        self.store.move(
            row.id,
            CommandState.DRIFTED,
            self.clock(),
            f"reports {report.state.model_dump_json()} instead of the step at {step.at}",
        )
        log.warning("device %s drifted from plan version %d", device_id, row.version)
        self.on_drift()
