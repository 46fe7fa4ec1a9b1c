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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self.link.on_connected.append(self.wake)
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

    def flush(self) -> int:
        """Publish every pending row once; returns how many the broker acknowledged."""
        if not self.link.connected.is_set():
            return 0
        rows = self.store.pending_commands()
        sent = [
            (
                row,
                self.link.publish(
                    self.topics.plan(row.device_id), row.payload.encode(), retain=True
                ),
            )
            for row in rows
        ]
        done = 0
        for row, info in sent:
            try:
                info.wait_for_publish(timeout=self.publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("plan %s v%d not acknowledged yet: %s", row.device_id, row.version, exc)
                continue
            if info.is_published():
                self.store.move(
                    row.id,
                    CommandState.PUBLISHED,
                    self.clock(),
                    only_from=frozenset({CommandState.PENDING}),
                )
                self.metrics.published.inc()
                done += 1
        if len(rows) > done:
            self._wake.set()  # try the rest again on the next round
            self._stop.wait(0.5)
        return done
