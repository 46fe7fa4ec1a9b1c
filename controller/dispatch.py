"""Outbox -> broker. Each pending plan version is published QoS 1, retained.

A row is committed before it is published, and it turns PUBLISHED only on the broker's
PUBACK. A row that was not acknowledged stays PENDING and is published again with the
same version, so a crash or an outage never loses a plan and devices drop duplicates.
"""

from __future__ import annotations

import logging
import threading

from controller.broker.link import BrokerLink
from controller.lifecycle import CommandState
from controller.metrics import Metrics
from controller.store.repo import Store
from devices.clock import Clock
from devices.protocol import Topics

log = logging.getLogger(__name__)

_NOT_REPUBLISHED = frozenset(
    {CommandState.SUPERSEDED.value, CommandState.REJECTED.value, CommandState.EXPIRED.value}
)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        link: BrokerLink,
        topics: Topics,
        clock: Clock,
        metrics: Metrics,
        publish_timeout_s: float,
    ) -> None:
        self.store = store
        self.link = link
        self.topics = topics
        self.clock = clock
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._republish: set[str] = set()
        self._republish_all = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self.link.on_connected.append(self.republish)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=2.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:
                log.exception("dispatch failed; will retry")

    def republish(self, device_id: str | None = None) -> None:
        """Publish the newest plan again, same version: of one device, or of all.

        Retained plans live in the broker, and a broker without persistence (the
        embedded one, or Mosquitto after a restart) forgets them; a rebooted device may
        have lost its plan too. Devices drop versions they already have, so this is safe.
        """
        with self._lock:
            if device_id is None:
                self._republish_all = True
            else:
                self._republish.add(device_id)
        self._wake.set()

    def _take_republish(self) -> tuple[bool, set[str]]:
        with self._lock:
            everything, some = self._republish_all, self._republish
            self._republish_all, self._republish = False, set()
            return everything, some

    def flush(self) -> int:
        """Publish every pending row once, and the plans asked for again; returns how
        many pending rows the broker acknowledged."""
        if not self.link.connected.is_set():
            return 0
        rows = self.store.pending_commands()
        everything, some = self._take_republish()
        if everything or some:
            pending = {row.device_id for row in rows}
            rows += [
                row
                for device_id, row in self.store.latest_commands().items()
                if device_id not in pending
                and (everything or device_id in some)
                and row.state not in _NOT_REPUBLISHED
            ]
        sent = [
            (row, self.link.publish(self.topics.plan(row.device_id), row.payload.encode(), True))
            for row in rows
        ]
        done = 0
        retry = False
        for row, info in sent:
            try:
                info.wait_for_publish(timeout=self.publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("plan %s v%d not acknowledged yet: %s", row.device_id, row.version, exc)
                retry = True
                continue
            if not info.is_published():
                retry = True
                continue
            if row.state == CommandState.PENDING.value:
                self.store.move(
                    row.id,
                    CommandState.PUBLISHED,
                    self.clock(),
                    only_from=frozenset({CommandState.PENDING}),
                )
                self.metrics.published.inc()
                done += 1
        if retry:
            self._wake.set()  # try the rest again on the next round
            self._stop.wait(0.5)
        return done
