"""The one place that wires Illuminate together: `Controller(settings)`."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterable
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import text

from controller.broker.embedded import EmbeddedBroker
from controller.broker.link import BrokerLink, Incoming
from controller.dispatch import Dispatcher
from controller.intake import Intake
from controller.metrics import Metrics
from controller.public_view import PublicView, store_snapshot
from controller.reconcile import Reconciler
from controller.settings import Settings
from controller.store.db import make_engine, migrate, session_factory
from controller.store.repo import Store
from controller.store.users import Users
from controller.timer import Timer
from controller.web.app import build_web
from devices.clock import TimeSource, system_clock
from devices.connection import BrokerAddress

log = logging.getLogger(__name__)

INBOX_LIMIT = 100_000


class Controller:
    """Store, broker link, intake, dispatcher, reconciler, timer and web app."""

    def __init__(self, settings: Settings, clock: TimeSource = system_clock) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.engine = make_engine(settings.database_url)
        migrate(self.engine)
        self.store = Store(session_factory(self.engine))
        self.users = Users(self.store.sessions)
        self.embedded: EmbeddedBroker | None = None
        if settings.broker.url is None:
            self.embedded = EmbeddedBroker(
                settings.broker.embedded_host, settings.broker.embedded_port
            )
        self.inbox: queue.Queue[Incoming] = queue.Queue(maxsize=INBOX_LIMIT)
        self.link: BrokerLink | None = None
        self.intake = Intake(self.store, settings.topics, self.inbox, clock, self.metrics)
        control = settings.control
        self.grace = timedelta(seconds=control.grace_s)
        self.reconciler = Reconciler(
            self.store,
            clock,
            horizon=timedelta(hours=control.horizon_h),
            grace=self.grace,
        )
        self.dispatcher: Dispatcher | None = None
        self.timer = Timer(self._reconcile, tick=timedelta(seconds=control.tick_s))
        # no intake hook yet: max_age_s brings device reports in within a second
        self.public = PublicView(
            lambda: store_snapshot(self.store),
            clock,
            grace=self.grace,
            upcoming=timedelta(hours=control.upcoming_h),
            max_age_s=1.0,
        )
        self.web: FastAPI = build_web(
            self.store,
            clock,
            self.metrics,
            public=self.public,
            ready=self.readiness,
            users=self.users,
            on_change=self.reconcile_now,
        )
        self.started = False

    def broker_address(self) -> BrokerAddress:
        if self.embedded is not None:
            return BrokerAddress.parse(self.embedded.url).with_credentials(
                self.settings.broker.username, None
            )
        return self.settings.broker.address()

    def start(self, wait_broker_s: float = 10.0) -> None:
        if self.embedded is not None:
            self.embedded.start()
            log.info("embedded broker on %s", self.embedded.url)
        address = self.broker_address()
        self.link = BrokerLink(
            address,
            self.settings.topics,
            self.settings.broker.client_id,
            self.inbox,
            started_at=self.clock(),
            ca_file=str(self.settings.broker.ca_file) if self.settings.broker.ca_file else None,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.link,
            self.settings.topics,
            self.clock,
            self.metrics,
            self.settings.control.publish_timeout_s,
        )
        self.reconciler.on_outbox = self.dispatcher.wake
        self.intake.on_drift = self.request_reconcile
        self.intake.on_stale_plan = self.dispatcher.republish
        self.link.on_connected.append(lambda: self.metrics.broker_connected.set(1))
        self.link.on_disconnected.append(lambda: self.metrics.broker_connected.set(0))
        self.intake.start()
        self.dispatcher.start()
        self.link.start()
        if not self.link.wait_connected(wait_broker_s):
            log.warning(
                "broker %s not reachable yet; retrying in the background", address.redacted()
            )
        self.timer.start()
        self.timer.fire()
        self.public.start()
        self.started = True

    def _reconcile(self) -> Iterable[datetime]:
        self.metrics.reconciles.inc()
        wake_at = self.reconciler.run().wake_at
        self.public.invalidate()
        return wake_at

    def request_reconcile(self) -> None:
        """Reconcile soon, on the timer's thread; many requests make one run."""
        self.timer.soon()

    def reconcile_now(self) -> None:
        """Reconcile at once (after an edit), and plan the next wake-ups."""
        self.timer.fire()

    def readiness(self) -> dict[str, bool]:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        broker = self.link is not None and self.link.connected.is_set()
        return {"database": database, "broker": broker}

    def stop(self) -> None:
        self.public.stop()
        self.timer.stop()
        if self.link is not None:
            self.link.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.intake.stop()
        if self.embedded is not None:
            self.embedded.stop()
        self.engine.dispose()
        self.started = False
