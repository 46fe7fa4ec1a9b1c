"""Outbox -> broker. Each pending plan version is published QoS 1, retained.

A row is committed before it is published, and it turns PUBLISHED only on the broker's
PUBACK. Publishes are pipelined: the dispatcher hands the broker every pending row at
once, each with a completion callback, and commits the PUBLISHED moves of whatever was
acknowledged in one batch. A publish not acknowledged within `publish_timeout_s` (on the
monotonic clock) is published again with the same version, so a lost connection or a
crash never loses a plan, and devices drop the duplicates.

A third-party device's command (a live command, `controller/live.py`) goes out through
its adapter as vendor messages, never retained (`controller/live_dispatch.py`); `live`
tells which devices have an adapter.

A command that carries `not_after` is never published after it, by the controller's
clock: a PENDING row whose `not_after` has passed turns EXPIRED instead, and a newest
command asked for again (a reconnect, a device's stale report) is not sent again once
its `not_after` has passed. It is never applied late: the device, by its own judgement,
acks `expired` a command that reaches it after `not_after`, too.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from controller.broker.base import Broker
from controller.lifecycle import CommandState
from controller.live_dispatch import publish_live
from controller.metrics import Metrics
from controller.plans import PlanOf, decoded
from controller.store.base import Command, Move, OutboxStore
from devices.adapters import Adapter
from devices.clock import TimeSource
from devices.protocol import ProtocolError, Topics

log = logging.getLogger(__name__)

NOT_REPUBLISHED = frozenset({CommandState.SUPERSEDED, CommandState.REJECTED, CommandState.EXPIRED})
MAX_IN_FLIGHT = 1_000
"""Plans handed to the broker and not yet acknowledged, at most: the rest wait in the
outbox, so a publish times out only when the broker is really not answering, and a
busy moment never turns into a storm of publishes sent again."""
IDLE_S = 1.0
REPUBLISH_EVERY_S = 10.0
MAX_REMEMBERED = 100_000
ACK_GATHER_S = 0.02


@dataclass
class _InFlight:
    command: Command
    deadline: float


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxStore,
        broker: Broker,
        topics: Topics,
        clock: TimeSource,
        metrics: Metrics,
        publish_timeout_s: float,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        live: Callable[[str], Adapter | None] | None = None,
        plans: PlanOf | None = None,
    ) -> None:
        self.outbox = outbox
        self.plan_of: PlanOf = plans if plans is not None else decoded
        """A command's plan (the controller's shared `PlanCache`: decoded once)."""
        self.live = live
        """The adapter of a third-party device (None: a native device, sent its plan)."""
        self.broker = broker
        self.topics = topics
        self.clock = clock
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self.max_in_flight = max_in_flight
        self._in_flight: dict[int, _InFlight] = {}
        self._acked: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._acked_pending: list[Command] = []
        """Acknowledged PENDING commands whose PUBLISHED move is not committed yet."""
        self._lock = threading.Lock()
        self._republish: set[str] = set()
        self._republished: dict[str, float] = {}
        self._republish_all = False
        self._wake = threading.Event()
        self._outbox_moved = True
        """Something may be waiting in the outbox (a new version, a reconnect, a publish
        timed out): the next round reads it. PUBACKs alone never make a round read it."""
        self._cursor: int | None = None
        """Every PENDING row up to this id is handed to the broker or in flight; None:
        read the outbox from its start (at first, after a reconnect or a failure)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    # the broker's connection events --------------------------------------------------

    def connected(self) -> None:
        """Retained plans live in the broker, and a broker without persistence (the
        embedded one, or Mosquitto after a restart) forgets them: publish every
        device's newest plan again on each connection that starts a new session. A
        connection that resumed the session (the broker closed ours for an account
        change, or the network blinked) finds them where they were: only the outbox is
        read again, and what was in flight on the old connection times out and goes
        again. (Should a broker come back from an older saved state, each device that
        reports a plan older than its newest is sent the newest: the stale-plan rule.)"""
        self._cursor = None
        if self.broker.session_resumed:
            self.wake()
            return
        self.republish()

    def disconnected(self) -> None:
        self.wake()

    # the thread ------------------------------------------------------------------

    def start(self) -> None:
        self.broker.add_listener(self)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """New rows in the outbox: publish them."""
        self._outbox_moved = True
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._idle_s())
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._outbox_moved:
                # only PUBACKs so far: let a few more arrive, to commit them together
                self._stop.wait(ACK_GATHER_S)
            try:
                self.step()
            except Exception:
                log.exception("dispatch failed; will retry")
                self._stop.wait(IDLE_S)

    def _idle_s(self) -> float:
        with self._lock:
            if not self._in_flight:
                return IDLE_S
            soonest = min(f.deadline for f in self._in_flight.values())
        return max(0.01, min(IDLE_S, soonest - self.clock.monotonic()))

    def republish(self, device_id: str | None = None) -> None:
        """Publish the newest plan again, same version: of one device, or of all.
        A rebooted device may have lost its plan; devices drop versions they have.
        One device's plan goes out again at most once per `REPUBLISH_EVERY_S`, so a
        device that keeps saying it lacks its plan cannot make the controller publish
        at the rate it sends (the requests between are dropped and counted)."""
        with self._lock:
            if device_id is None:
                self._republish_all = True
            else:
                mono = self.clock.monotonic()
                last = self._republished.get(device_id)
                if last is not None and mono - last < REPUBLISH_EVERY_S:
                    self.metrics.republish_skipped.inc()
                    return
                self._republished[device_id] = mono
                if len(self._republished) > MAX_REMEMBERED:
                    self._republished = {
                        d: t for d, t in self._republished.items() if mono - t < REPUBLISH_EVERY_S
                    }
                self._republish.add(device_id)
        self.wake()

    # one round (the unit tests call it directly) ---------------------------------

    def step(self) -> int:
        """Take what the broker acknowledged, time out what it did not, publish what is
        pending or asked for again, then commit the acknowledged as PUBLISHED (after the
        publishing: a commit waits its turn behind the intake's, and the broker need not
        wait with it). Returns how many rows turned PUBLISHED."""
        self._take_acks()
        self._expire()
        self._publish_round()
        return self._store_acks()

    def _publish_round(self) -> None:
        if not self.broker.is_connected or not self._outbox_moved:
            return
        with self._lock:
            room = self.max_in_flight - len(self._in_flight)
            busy = set(self._in_flight) | {c.id for c in self._acked_pending}
        if room <= 0:
            return  # the outbox is read again as soon as acknowledgements free room
        self._outbox_moved = False
        # one more than fits, to know whether more is waiting; from the cursor on, so a
        # long outbox is walked once, not from its start at every round
        cursor = self._cursor
        limit = room + 1 if cursor is not None else room + len(busy) + 1
        page = self.outbox.pending(limit=limit, after=cursor)
        if len(page) >= limit:
            self._outbox_moved = True  # a full page: more may wait past it, busy rows or not
        rows = [c for c in page if c.id not in busy]
        now = self.clock()
        expired = [c for c in rows if _past_not_after(c, now, self.plan_of)]
        if expired:
            self._expire_unsent(expired, now)
            rows = [c for c in rows if not _past_not_after(c, now, self.plan_of)]
        # the rows of this page: only they move the cursor (a PENDING row published again
        # for a device further on must not make the cursor skip the rows between)
        read = {c.id for c in rows}
        everything, some = self._take_republish()
        if everything or some:
            pending = {c.device_id for c in rows} | {
                f.command.device_id for f in self._in_flight.values()
            }
            latest = self.outbox.latest(None if everything else some)
            rows += [
                c
                for c in latest.values()
                if c.device_id not in pending
                and c.state not in NOT_REPUBLISHED
                and not _past_not_after(c, now, self.plan_of)
            ]
        if len(rows) > room:
            # more than fits in flight: the rest waits (pending rows stay in the outbox,
            # plans to publish again are kept) for the next round
            with self._lock:
                self._republish.update(
                    c.device_id for c in rows[room:] if c.state is not CommandState.PENDING
                )
            self._outbox_moved = True
            rows = rows[:room]
        for command in rows:
            self._publish(command)
        handed = [c.id for c in rows if c.state is CommandState.PENDING and c.id in read]
        handed += [c.id for c in expired]
        if handed and self._cursor == cursor:  # (a failed publish may have reset it)
            # every PENDING row up to here is handed out or in flight
            self._cursor = max(handed)

    def _publish(self, command: Command) -> None:
        deadline = self.clock.monotonic() + self.publish_timeout_s
        with self._lock:
            self._in_flight[command.id] = _InFlight(command, deadline)

        def done(ok: bool, command_id: int = command.id) -> None:
            self._acked.put((command_id, ok))
            self._wake.set()

        adapter = self.live(command.device_id) if self.live is not None else None
        if adapter is not None:
            try:
                queued = publish_live(
                    self.broker, adapter, command, self.clock(), done, self.plan_of(command)
                )
            except Exception as exc:  # a payload that does not decode: not sendable
                log.error("device %s: cannot send v%d: %s", command.device_id, command.version, exc)
                queued = False
        else:
            queued = self.broker.publish(
                self.topics.plan(command.device_id),
                command.payload.encode(),
                retain=True,
                done=done,
            )
        if not queued:
            with self._lock:
                self._in_flight.pop(command.id, None)
            self._outbox_moved = True
            self._cursor = None  # read it again from the outbox's start

    def _expire_unsent(self, commands: list[Command], now: datetime) -> None:
        moves = [
            Move(
                c.id,
                CommandState.EXPIRED,
                now,
                "not_after passed before it could be published",
                only_from=frozenset({CommandState.PENDING}),
            )
            for c in commands
        ]
        n = sum(self.outbox.move(moves))
        self.metrics.expired.inc(n)
        if n:
            shown = ", ".join(f"{c.device_id} v{c.version}" for c in commands[:5])
            log.warning("%d commands expired unsent (not_after passed): %s", n, shown)

    def _take_acks(self) -> None:
        """Free the room of what the broker acknowledged; the PENDING ones wait in
        `_acked_pending` for `_store_acks` (kept there until a commit succeeds)."""
        acked = self._acked_pending
        while True:
            try:
                command_id, ok = self._acked.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                flight = self._in_flight.pop(command_id, None)
            if flight is None:
                continue
            if not ok:
                log.warning(
                    "broker refused plan %s v%d; publishing it again after %.0f s",
                    flight.command.device_id,
                    flight.command.version,
                    self.publish_timeout_s,
                )
                with self._lock:  # held until its deadline: a refusal is no hot loop
                    self._in_flight[command_id] = flight
                continue
            if flight.command.state is CommandState.PENDING:
                acked.append(flight.command)

    def _store_acks(self) -> int:
        acked = self._acked_pending
        if not acked:
            return 0
        now = self.clock()
        results = self.outbox.move(
            [
                Move(c.id, CommandState.PUBLISHED, now, only_from=frozenset({CommandState.PENDING}))
                for c in acked
            ]
        )
        self._acked_pending = []
        n = sum(results)
        self.metrics.published.inc(n)
        return n

    def _expire(self) -> None:
        mono = self.clock.monotonic()
        with self._lock:
            late = [i for i, f in self._in_flight.items() if f.deadline <= mono]
            for command_id in late:
                flight = self._in_flight.pop(command_id)
                if flight.command.state is not CommandState.PENDING:
                    self._republish.add(flight.command.device_id)
        if late:
            self._outbox_moved = True
            self._cursor = None  # rows timed out behind the cursor: read from the start
            self.metrics.publish_timeouts.inc(len(late))
            log.warning("%d plan publishes not acknowledged in time; publishing again", len(late))

    def _take_republish(self) -> tuple[bool, set[str]]:
        with self._lock:
            everything, some = self._republish_all, self._republish
            self._republish_all, self._republish = False, set()
            return everything, some

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)


def _past_not_after(command: Command, now: datetime, plan_of: PlanOf) -> bool:
    """Has the command's `not_after` passed? Only a payload that names one is decoded."""
    if '"not_after"' not in command.payload:
        return False
    try:
        not_after = plan_of(command).not_after
    except ProtocolError:
        return False  # not ours to judge: published as it is, the device refuses it
    return not_after is not None and now > not_after
