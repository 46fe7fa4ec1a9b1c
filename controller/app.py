"""The one place that wires Illuminate together: `Controller(settings)`.

broker --sink--> Inbox --take--> Intake --batch--> stores
                                   | outcome: invalidate the public view,
                                   | republish stale plans, reconcile on drift
       --vendor topics--> AdapterIntake (third-party devices) --batch--> stores
                                   | outcome: the same, and resend to a device back online
ClockBeacon (every control.clock_beacon_s, and on connect) --> broker
Timer (tick + wake-ups) --> Reconciler --versions--> outbox --> Dispatcher --> broker
                  (live commands for third-party devices; sent through their adapters)
Recorder (heartbeat) --> controller runs; ended windows --> outcomes (the record)
RevisionWatch (changes by other processes) --> reconcile soon, public view stale
PublicView (rendered once per change, off the request path) --> web app
           (saved as the last-known copy in data_dir, served at the next start)
Readiness (database probe, broker link, intake backlog) --> /readyz
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from fastapi import FastAPI

from controller.adapter_devices import AdapterDevices
from controller.adapter_intake import AdapterIntake
from controller.adapter_intake import Outcome as AdapterOutcome
from controller.barrier import encode_barrier
from controller.beacon import ClockBeacon
from controller.broker.base import Broker, Incoming
from controller.broker.embedded import EmbeddedBroker
from controller.broker.gate import BrokerGate, ControllerAccount
from controller.broker.link import PahoBroker
from controller.broker.local_accounts import LocalAccounts
from controller.clockwatch import ClockWatch
from controller.device_health import HealthTracker
from controller.dispatch import Dispatcher
from controller.flash import FlashTester
from controller.health import BacklogBound, DatabaseProbe, Readiness
from controller.inbox import Backlog, Inbox
from controller.intake import Intake, Outcome
from controller.last_known import FILE_NAME, FileLastKnown
from controller.live_dispatch import AskAgainOnReconnect, request_state
from controller.metrics import Metrics
from controller.plans import PlanCache
from controller.public_view import PublicView
from controller.reconcile import Reconciler
from controller.recorder import Recorder
from controller.registrar import build_registrar
from controller.settings import Settings
from controller.steady import SteadyClock
from controller.store.base import Snapshot
from controller.store.changes import Catalogs, Snapshots, watched
from controller.store.db import make_engine, migrate, session_factory
from controller.store.history_sql import sql_history
from controller.store.sql import sql_stores
from controller.store.users import Users
from controller.timelines import Timelines
from controller.timer import ApsWakeups, Timer, Wakeups
from controller.watch import RevisionWatch
from controller.web.app import build_web
from controller.web.broker_hook import build_broker_hook
from controller.web.device_ops_api import DeviceOps
from devices.clock import TimeSource, system_clock
from devices.connection import BrokerAddress

log = logging.getLogger(__name__)

RETAINED_SETTLE = timedelta(seconds=1)
"""After the broker link comes up, what it brings in this long (the devices' retained
state and status) is stored before the first public build after a start."""
BROKER_WARN_S = 10.0
OFFLINE = b'{"v":1,"online":false}'
"""The retained status the controller publishes for a device whose account changed."""


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
        steady = SteadyClock(
            clock or system_clock,
            follow_after_s=control.clock_follow_step_s,
            on_step=lambda _s: self.metrics.clock_steps.inc(),
        )
        self.clock: TimeSource = steady
        self.engine = make_engine(settings.database_url)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        stores = sql_stores(self.sessions)
        self.stores = watched(stores)
        self.history = sql_history(self.sessions, getattr(stores.outbox, "turn", None))
        self.users = Users(self.sessions)
        self.embedded: EmbeddedBroker | None = None
        self.accounts: LocalAccounts | None = None
        """The devices' broker accounts, when the controller keeps them: for the embedded
        broker, or for a broker that asks the hook (broker_hook.token)."""
        self.login: ControllerAccount | None = None
        self.gate: BrokerGate | None = None
        hook = settings.broker_hook.token
        if settings.broker.url is None or hook is not None:
            self.accounts = LocalAccounts.in_folder(settings.data_dir, settings.topics)
        if settings.broker.url is None:
            # every client of the embedded broker logs in: the devices with their
            # accounts, the controller with a password drawn for this run
            self.login = ControllerAccount.generate(
                settings.broker.username, settings.broker.client_id
            )
        elif hook is not None:
            password = settings.broker.password
            self.login = ControllerAccount(
                settings.broker.username,
                settings.broker.client_id,
                password.get_secret_value() if password else "",
            )
        if self.login is not None and self.accounts is not None:
            self.gate = BrokerGate(self.login, self.accounts, settings.topics)
        if settings.broker.url is None and self.gate is not None:
            self.embedded = EmbeddedBroker(
                settings.broker.embedded_host, settings.broker.embedded_port, gate=self.gate
            )
        self.inbox = Inbox(
            settings.topics,
            on_drop=lambda r: self.metrics.dropped_messages.labels(reason=r).inc(),
            # every barrier passes the third-party devices' queue too (controller/barrier.py)
            on_barrier=lambda at: self.adapter_intake.put_barrier(at),
            monotonic=self.clock.monotonic,
        )
        self.broker: Broker | None = None
        self.clock_watch = ClockWatch(control.clock_tolerance_ms, self.metrics)
        self.plans = PlanCache()
        """Every reader's decoded plans (reconciler, intakes, dispatcher, public view)."""
        self.intake = Intake(
            self.stores,
            settings.topics,
            self.inbox,
            self.clock,
            self.metrics,
            clock_watch=self.clock_watch,
            history=self.history,
            plans=self.plans,
        )
        self.intake.on_outcome = self._outcome
        self.adapter_devices = AdapterDevices(self.stores.registry, on_change=self._follow)
        """The registered third-party devices, as adapters (routes their vendor topics)."""
        self.adapter_intake = AdapterIntake(
            self.stores,
            self.adapter_devices,
            self.clock,
            self.metrics,
            history=self.history,
            plans=self.plans,
        )
        self.adapter_intake.on_outcome = self._adapter_outcome
        self.grace = timedelta(seconds=control.grace_s)
        self.timelines = Timelines()
        catalogs = Catalogs(self.stores.registry)
        self.reconciler = Reconciler(
            self.stores,
            self.clock,
            horizon=timedelta(hours=control.horizon_h),
            grace=self.grace,
            timelines=self.timelines,
            caught_up=self.caught_up_to,
            plans=self.plans,
            live=self.adapter_devices.is_live,
            catalogs=catalogs,
        )
        self.recorder = Recorder(
            self.history,
            self.stores,
            self.clock,
            self.grace,
            self.timelines,
            caught_up=self.caught_up_to,
            catalogs=catalogs,
        )
        self.dispatcher: Dispatcher | None = None
        self.beacon: ClockBeacon | None = None
        self.timer = Timer(
            self._reconcile,
            tick=timedelta(seconds=control.tick_s),
            wakeups=wakeups or ApsWakeups(offset=steady.offset),
        )
        self.watch = RevisionWatch(self.stores, self.changed)
        health = settings.health
        self._connected_at: datetime | None = None
        self._warn_timer: threading.Timer | None = None
        self.snapshots = Snapshots(self.stores, catalogs=catalogs)
        self.public = PublicView(
            self._snapshot,
            self.clock,
            grace=self.grace,
            upcoming=timedelta(hours=control.upcoming_h),
            plans=self.plans,
            max_age_s=health.public_max_age_s,
            last_known=FileLastKnown(settings.data_dir / FILE_NAME),
            hold=self._not_heard_yet,
            hold_s=health.public_hold_s,
        )
        self.database_probe = DatabaseProbe(settings.database_url, health.database_timeout_s)
        self.health = Readiness(
            database=self.database_probe,
            broker=lambda: self.broker is not None and self.broker.is_connected,
            backlog=self._backlog,
            bound=BacklogBound(health.backlog_max, health.backlog_age_s),
            monotonic=self.clock.monotonic,
        )
        self.metrics.intake_backlog.set_function(lambda: self._backlog().count)
        self.metrics.intake_oldest_age.set_function(
            lambda: self._backlog().age_s(self.clock.monotonic())
        )
        self.registrar = build_registrar(
            settings,
            self.stores,
            accounts=self.accounts,  # the controller's own, when it keeps them
            on_revoked=self._revoked,  # the embedded broker's port: set in `start`
        )
        if self.registrar.accounts is None:
            log.info(
                "no broker.dynsec_admin_username: device accounts on the broker are the "
                "operator's to provision (deploy/mosquitto/README.md)"
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
            registrar=self.registrar,
            public_settings=settings.public,
        )
        if hook is not None and self.gate is not None:
            self.web.include_router(build_broker_hook(self.gate, hook.get_secret_value()))
        self.device_health = HealthTracker()
        self.intake.on_message = self.device_health.observe
        self.adapter_intake.on_seen = self.device_health.seen
        self.flash = FlashTester(self.stores, self.clock, self.clock.monotonic, wake=self._wake)
        self.web.state.device_ops = DeviceOps(self.flash, self.device_health, self.clock_watch)
        self.started = False

    def _wake(self) -> None:
        """A test plan is in the outbox: publish it, and let the reconciler see it (it
        wakes up again at the test's end to send the real plan back)."""
        if self.dispatcher is not None:
            self.dispatcher.wake()
        self.public.invalidate()
        self.timer.soon()

    def broker_address(self) -> BrokerAddress:
        if self.embedded is not None and self.login is not None:
            return BrokerAddress.parse(self.embedded.url).with_credentials(
                self.login.username, self.login.password
            )
        return self.settings.broker.address()

    def start(self, wait_broker_s: float = 10.0) -> None:
        """Start everything; returns without waiting for the first reconcile, so the web
        app answers at once (the public view says 'starting' until its first build)."""
        if self.embedded is not None:
            self.embedded.start()
            log.info("embedded broker on %s", self.embedded.url)
            # its port is known now (0 asks for any free one)
            self.registrar.endpoint = self.settings.broker.device_endpoint(self.embedded.url)
        address = self.broker_address()
        ca_file = self.settings.broker.ca_file
        self.broker = PahoBroker(
            address,
            self.settings.topics,
            self.settings.broker.client_id,
            self._sink,
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
            live=self.adapter_devices.adapter,
            plans=self.plans,
        )
        self.adapter_devices.refresh()
        self._follow()
        self.beacon = ClockBeacon(
            self.broker,
            self.settings.topics,
            self.clock,
            every_s=self.settings.control.clock_beacon_s,
            tolerance_ms=self.settings.control.clock_tolerance_ms,
        )
        broker, barrier_topic = self.broker, self.settings.topics.controller_barrier
        self.intake.send_barrier = lambda at: broker.publish(
            barrier_topic, encode_barrier(at), retain=False
        )
        self.reconciler.on_outbox = self.dispatcher.wake
        self.broker.add_listener(_Gauge(self.metrics))
        self.recorder.start()
        self.broker.add_listener(_Link(self))
        self.broker.add_listener(
            AskAgainOnReconnect(self.stores.outbox, self.adapter_devices.all, self.broker)
        )
        self.intake.start()
        self.adapter_intake.start()
        self.dispatcher.start()
        self.beacon.start()
        self.public.start()
        self.broker.start()
        if wait_broker_s > 0:
            self._warn_unreachable(wait_broker_s)
        else:  # do not wait (the web app should answer at once): warn later if need be
            self._warn_timer = threading.Timer(BROKER_WARN_S, self._warn_unreachable, (0.0,))
            self._warn_timer.daemon = True
            self._warn_timer.start()
        self.timer.start()
        self.watch.start()
        self.timer.soon()
        self.started = True

    def _warn_unreachable(self, wait_s: float) -> None:
        broker = self.broker
        if broker is not None and not broker.wait_connected(wait_s):
            log.warning(
                "broker %s not reachable yet; retrying in the background",
                self.broker_address().redacted(),
            )

    def _snapshot(self) -> Snapshot:
        """What the public view builds from; the device gauges are counted from it."""
        snap = self.snapshots()
        self.metrics.count_devices(snap.devices)
        return snap

    def _not_heard_yet(self) -> bool:
        """True until the broker link is up and what it brought first is stored: the
        first public build after a start waits for it (see controller/public_view.py)."""
        connected_at = self._connected_at
        if connected_at is None:
            return True
        caught_up = self.caught_up_to()
        return caught_up is None or caught_up < connected_at + RETAINED_SETTLE

    def caught_up_to(self) -> datetime | None:
        """Every device message that reached the broker before this time is stored,
        native and third-party (None: not known yet; controller/barrier.py)."""
        native, vendor = self.intake.caught_up_to(), self.adapter_intake.caught_up_to()
        if native is None or vendor is None:
            return None
        return min(native, vendor)

    def _backlog(self) -> Backlog:
        """Device messages received and not stored yet: native and third-party."""
        native, vendor = self.inbox.backlog(), self.adapter_intake.backlog()
        ats = [at for at in (native.oldest_at, vendor.oldest_at) if at is not None]
        return Backlog(native.count + vendor.count, min(ats) if ats else None)

    def _sink(self, message: Incoming) -> None:
        """The broker's messages: the native devices' topics to the inbox, the rest
        (third-party devices' vendor topics, never under the root) to the adapters."""
        if message.topic.startswith(self._root):
            self.inbox.put(message)
        else:
            self.adapter_intake.put(message)

    @property
    def _root(self) -> str:
        return f"{self.settings.topics.root}/"

    def _follow(self) -> None:
        """The broker link follows the registered third-party devices' report topics."""
        if self.broker is not None:
            self.broker.follow(self.adapter_devices.report_topics())

    def _adapter_outcome(self, outcome: AdapterOutcome) -> None:
        if outcome.devices:
            self.public.invalidate()
            self.flash.notify(outcome.devices)
        if outcome.drift:
            self.timer.soon()
        broker, dispatcher = self.broker, self.dispatcher
        if broker is None or dispatcher is None:
            return
        for device_id in outcome.resend:
            dispatcher.republish(device_id)  # the current desired state, again
        asks = dict(outcome.state_requests)
        asks.update({d: 0 for d in outcome.resend if d not in asks})
        for device_id, version in asks.items():
            adapter = self.adapter_devices.adapter(device_id)
            if adapter is not None:
                request_state(broker, adapter, version)

    def _reconcile(self) -> Iterable[datetime]:
        self.metrics.reconciles.inc()
        try:
            self.adapter_devices.refresh()  # devices registered since: route, plan, send
            self._follow()  # (and a vendor topic the broker refused is asked for again)
        except Exception:
            log.exception("could not read the third-party devices; keeping the ones known")
        result = self.reconciler.run()
        if result.conflicts:
            self.timer.soon()  # decisions that lost a race: take them again on fresh reads
        if result.new_versions or result.unconfirmed:
            self.public.invalidate()
        return result.wake_at

    def _outcome(self, outcome: Outcome) -> None:
        if outcome.devices:
            self.public.invalidate()
            self.flash.notify(outcome.devices)
        if outcome.drift:
            self.timer.soon()
        if self.dispatcher is not None:
            for device_id in outcome.stale_plans:
                self.dispatcher.republish(device_id)

    def _revoked(self, device_id: str, decommissioned: bool) -> None:
        """A device's credentials were rotated or revoked: the broker closed its
        connection without its last will, so say on its behalf, retained, that it is
        offline; a decommissioned device's retained plan is cleared too."""
        broker = self.broker
        topics = self.settings.topics
        if broker is None or not broker.is_connected:
            log.warning(
                "device %s: the broker is not connected; its retained status is not corrected",
                device_id,
            )
            return
        broker.publish(topics.status(device_id), OFFLINE, retain=True)
        if decommissioned:
            broker.publish(topics.plan(device_id), b"", retain=True)

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
        """/readyz: the database answers in time, the broker link is up, the intake keeps
        up (controller/health.py)."""
        return self.health.checks()

    def stop(self) -> None:
        if self._warn_timer is not None:
            self._warn_timer.cancel()
        self.watch.stop()
        self.timer.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.beacon is not None:
            self.beacon.stop()
        self.intake.stop()
        self.adapter_intake.stop()
        self.recorder.stop()
        self.public.stop()
        if self.embedded is not None:
            self.embedded.stop()
        self.engine.dispose()
        self.database_probe.dispose()
        self.started = False


class _Link:
    """Notes when the broker link came up (for the first public build's hold)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def connected(self) -> None:
        self.controller._connected_at = self.controller.clock()

    def disconnected(self) -> None:
        pass


class _Gauge:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def connected(self) -> None:
        self.metrics.broker_connected.set(1)

    def disconnected(self) -> None:
        self.metrics.broker_connected.set(0)
