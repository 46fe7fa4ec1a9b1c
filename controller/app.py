"""The one place that wires Illuminate together: `Controller(settings)`.

broker --sink--> Inbox --take--> Intake --batch--> stores
                                   | outcome: invalidate the public view,
                                   | republish stale plans, reconcile on drift
ClockBeacon (every control.clock_beacon_s, on connect, on a device's birth) --> broker
Timer (tick + wake-ups) --> Reconciler --versions--> outbox --> Dispatcher --> broker
Recorder (heartbeat) --> controller runs; ended windows --> outcomes (the record)
RevisionWatch (changes by other processes) --> reconcile soon, public view stale
PublicView (rendered once per change, off the request path) --> web app
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import text

from controller.beacon import ClockBeacon
from controller.broker.base import Broker
from controller.broker.embedded import EmbeddedBroker
from controller.broker.link import PahoBroker
from controller.clockwatch import ClockWatch
from controller.dispatch import Dispatcher
from controller.inbox import Inbox
from controller.intake import Intake, Outcome
from controller.metrics import Metrics
from controller.plans import PlanCache
from controller.public_view import PublicView
from controller.reconcile import Reconciler
from controller.recorder import Recorder
from controller.settings import Settings
from controller.steady import SteadyClock
from controller.store.changes import Snapshots, watched
from controller.store.db import make_engine, migrate, session_factory
from controller.store.history_sql import sql_history
from controller.store.sql import sql_stores
from controller.store.users import Users
from controller.timelines import Timelines
from controller.timer import ApsWakeups, Timer, Wakeups
from controller.watch import RevisionWatch
from controller.web.app import build_web
from devices.clock import TimeSource, system_clock
from devices.connection import BrokerAddress

log = logging.getLogger(__name__)


class Controller:
    """Stores, broker, inbox, intake, dispatcher, reconciler, timer and web app."""

    def __init__(
        self,
        settings: Settings,
        clock: TimeSource | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        control = settings.control
        # the controller keeps time by the system's clock (or the one given), held steady
        # through steps of its wall reading (see controller/steady.py)
        self.clock: TimeSource = SteadyClock(
            clock or system_clock,
            follow_after_s=control.clock_follow_step_s,
            on_step=lambda _s: self.metrics.clock_steps.inc(),
        )
        self.engine = make_engine(settings.database_url)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        stores = sql_stores(self.sessions)
        self.stores = watched(stores)
        self.history = sql_history(self.sessions, getattr(stores.outbox, "turn", None))
        self.users = Users(self.sessions)
        self.embedded: EmbeddedBroker | None = None
        if settings.broker.url is None:
            self.embedded = EmbeddedBroker(
                settings.broker.embedded_host, settings.broker.embedded_port
            )
        self.inbox = Inbox(
            settings.topics,
            on_drop=lambda r: self.metrics.dropped_messages.labels(reason=r).inc(),
            clock=self.clock,
        )
        self.broker: Broker | None = None
        self.clock_watch = ClockWatch(control.clock_tolerance_ms, self.metrics)
        self.intake = Intake(
            self.stores,
            settings.topics,
            self.inbox,
            self.clock,
            self.metrics,
            clock_watch=self.clock_watch,
            history=self.history,
        )
        self.intake.on_outcome = self._outcome
        self.grace = timedelta(seconds=control.grace_s)
        self.timelines = Timelines()
        self.plans = PlanCache()
        self.reconciler = Reconciler(
            self.stores,
            self.clock,
            horizon=timedelta(hours=control.horizon_h),
            grace=self.grace,
            timelines=self.timelines,
            caught_up=self.intake.caught_up_to,
            plans=self.plans,
        )
        self.recorder = Recorder(
            self.history,
            self.stores,
            self.clock,
            self.grace,
            self.timelines,
            caught_up=self.intake.caught_up_to,
        )
        self.dispatcher: Dispatcher | None = None
        self.beacon: ClockBeacon | None = None
        self.timer = Timer(
            self._reconcile, tick=timedelta(seconds=control.tick_s), wakeups=wakeups or ApsWakeups()
        )
        self.watch = RevisionWatch(self.stores, self.changed)
        self.public = PublicView(
            Snapshots(self.stores),
            self.clock,
            grace=self.grace,
            upcoming=timedelta(hours=control.upcoming_h),
            plans=self.plans,
        )
        self.web: FastAPI = build_web(
            self.stores,
            self.clock,
            self.metrics,
            public=self.public,
            ready=self.readiness,
            users=self.users,
            on_change=self.changed,
            limits=settings.limits.campaign_limits(),
            evaluation_s=settings.limits.evaluation_s,
            history=self.history,
        )
        self.started = False

    def broker_address(self) -> BrokerAddress:
        if self.embedded is not None:
            return BrokerAddress.parse(self.embedded.url).with_credentials(
                self.settings.broker.username, None
            )
        return self.settings.broker.address()

    def start(self, wait_broker_s: float = 10.0) -> None:
        """Start everything; returns without waiting for the first reconcile, so the web
        app answers at once (the public view says 'starting' until its first build)."""
        if self.embedded is not None:
            self.embedded.start()
            log.info("embedded broker on %s", self.embedded.url)
        address = self.broker_address()
        ca_file = self.settings.broker.ca_file
        self.broker = PahoBroker(
            address,
            self.settings.topics,
            self.settings.broker.client_id,
            self.inbox.put,
            started_at=self.clock(),
            ca_file=str(ca_file) if ca_file else None,
            mqtt5=self.embedded is None,  # the embedded broker speaks MQTT 3.1.1 only
        )
        self.dispatcher = Dispatcher(
            self.stores.outbox,
            self.broker,
            self.settings.topics,
            self.clock,
            self.metrics,
            self.settings.control.publish_timeout_s,
        )
        self.beacon = ClockBeacon(
            self.broker,
            self.settings.topics,
            self.clock,
            every_s=self.settings.control.clock_beacon_s,
            tolerance_ms=self.settings.control.clock_tolerance_ms,
        )
        self.reconciler.on_outbox = self.dispatcher.wake
        self.broker.add_listener(_Gauge(self.metrics))
        self.recorder.start()
        self.intake.start()
        self.dispatcher.start()
        self.beacon.start()
        self.public.start()
        self.broker.start()
        if not self.broker.wait_connected(wait_broker_s):
            log.warning(
                "broker %s not reachable yet; retrying in the background", address.redacted()
            )
        self.timer.start()
        self.watch.start()
        self.timer.soon()
        self.started = True

    def _reconcile(self) -> Iterable[datetime]:
        self.metrics.reconciles.inc()
        result = self.reconciler.run()
        if result.conflicts:
            self.timer.soon()  # decisions that lost a race: take them again on fresh reads
        if result.new_versions or result.unconfirmed:
            self.public.invalidate()
        return result.wake_at

    def _outcome(self, outcome: Outcome) -> None:
        if outcome.devices:
            self.public.invalidate()
        if outcome.drift:
            self.timer.soon()
        if outcome.came_online and self.beacon is not None:
            self.beacon.soon()
        if self.dispatcher is not None:
            for device_id in outcome.stale_plans:
                self.dispatcher.republish(device_id)

    def changed(self) -> None:
        """Sites, devices or campaigns changed (here or in another process): reconcile
        soon, on the timer's thread, read the registry again, and render the public view
        again. Returns at once."""
        self.intake.forget_registry()
        self.public.invalidate()
        self.timer.soon()

    def reconcile_now(self) -> None:
        """Reconcile at once, on the caller's thread (tests and the demo's first run)."""
        self.timer.fire()

    def readiness(self) -> dict[str, bool]:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        broker = self.broker is not None and self.broker.is_connected
        return {"database": database, "broker": broker}

    def stop(self) -> None:
        self.watch.stop()
        self.timer.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.beacon is not None:
            self.beacon.stop()
        self.intake.stop()
        self.recorder.stop()
        self.public.stop()
        if self.embedded is not None:
            self.embedded.stop()
        self.engine.dispose()
        self.started = False


class _Gauge:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def connected(self) -> None:
        self.metrics.broker_connected.set(1)

    def disconnected(self) -> None:
        self.metrics.broker_connected.set(0)
