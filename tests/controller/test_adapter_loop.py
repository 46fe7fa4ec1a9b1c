"""Third-party devices through the controller's loop, on fakes: the registry holds a
WLED (or Zigbee2MQTT) device, the reconciler issues live commands, the dispatcher sends
them through the adapter on the in-memory broker, and the adapter intake confirms them
from vendor payloads. A fake clock: no sleeps."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.adapter_devices import AdapterDevices
from controller.adapter_intake import AdapterIntake, Outcome
from controller.broker.base import Incoming
from controller.broker.memory import MemoryBroker
from controller.dispatch import Dispatcher
from controller.lifecycle import CommandState as S
from controller.live_dispatch import AskAgainOnReconnect
from controller.metrics import Metrics
from controller.public import public_status
from controller.reconcile import Reconciler
from controller.store.base import Command, NewDevice, Stores
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import Topics
from schedules.model import Campaign, SiteCatalog

START = datetime(2025, 6, 10, 19, 0, tzinfo=UTC)  # 21:00 in Brussels
END = datetime(2025, 6, 10, 21, 0, tzinfo=UTC)
GRACE = timedelta(seconds=30)
TOPICS = Topics()
SITES = SiteCatalog.model_validate(
    {
        "cities": [{"id": "bxl", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {"id": "atomium", "city": "bxl", "name": {"en": "Atomium"}, "lat": 50.9, "lon": 4.3},
            {"id": "belfry", "city": "bxl", "name": {"en": "Belfry"}, "lat": 50.8, "lon": 4.3},
        ],
    }
)
BLUE = Campaign.model_validate(
    {
        "id": "blue-heart",
        "title": {"en": "Blue Heart"},
        "color": "#009EDB",
        "level": 80,
        "windows": [
            {
                "targets": {"all": True},
                "dates": ["2025-06-10"],
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
    }
)
WLED = {"topic": "wled/atomium"}
Z2M = {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"}


class World:
    def __init__(self, devices: dict[str, tuple[str, str, dict[str, object]]]) -> None:
        self.clock = FakeClock(START - timedelta(hours=1))
        self.stores: Stores = memory_stores()
        self.stores.registry.import_catalog(SITES)
        self.stores.registry.add_devices(
            [NewDevice(d, site, None, adapter, cfg) for d, (site, adapter, cfg) in devices.items()],
            self.clock(),
        )
        self.stores.campaigns.put(BLUE, self.clock())
        self.metrics = Metrics()
        self.adapters = AdapterDevices(self.stores.registry)
        self.adapters.refresh()
        self.broker = MemoryBroker(lambda _m: None, auto_ack=True)
        self.dispatcher = Dispatcher(
            self.stores.outbox,
            self.broker,
            TOPICS,
            self.clock,
            self.metrics,
            10.0,
            live=self.adapters.adapter,
        )
        self.broker.add_listener(self.dispatcher)
        self.broker.connect()
        self.reconciler = Reconciler(
            self.stores,
            self.clock,
            horizon=timedelta(hours=48),
            grace=GRACE,
            live=self.adapters.is_live,
            on_outbox=self.dispatcher.wake,
        )
        self.intake = AdapterIntake(self.stores, self.adapters, self.clock, self.metrics)
        self.outcomes: list[Outcome] = []
        self.intake.on_outcome = self.outcomes.append

    def at(self, when: datetime) -> None:
        self.clock.advance(when - self.clock())

    def reconcile(self) -> None:
        self.reconciler.run()
        self.dispatcher.step()
        self.dispatcher.step()  # commit the PUBACKs

    def latest(self, device_id: str) -> Command:
        return self.stores.outbox.latest([device_id])[device_id]

    def report(self, topic: str, payload: str | bytes, retain: bool = False) -> Outcome:
        data = payload.encode() if isinstance(payload, str) else payload
        return self.intake.process([Incoming(topic, data, retain)])

    def sent(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(p.payload) for p in self.broker.published if p.topic == topic]

    def public(self) -> dict[str, str]:
        snap = self.stores.snapshot()
        status = public_status(snap, self.clock(), GRACE, timedelta(hours=24))
        return {s.id: s.state.value for s in status.sites}


@pytest.fixture
def w() -> World:
    world = World({"wled-1": ("atomium", "wled", WLED)})
    world.report("wled/atomium/status", "online", retain=True)
    return world


def test_routing_is_by_exact_topic_and_a_bridge_topic_speaks_for_each_light() -> None:
    world = World(
        {
            "z-1": ("belfry", "zigbee2mqtt", Z2M),
            "z-2": ("belfry", "zigbee2mqtt", {**Z2M, "friendly_name": "belfry/flood2"}),
            "wled-1": ("atomium", "wled", WLED),
        }
    )
    assert [d for d, _ in world.adapters.route("zigbee2mqtt/bridge/state")] == ["z-1", "z-2"]
    assert [d for d, _ in world.adapters.route("zigbee2mqtt/belfry/flood2")] == ["z-2"]
    assert world.adapters.route("wled/atomium/#") == ()
    assert world.adapters.route("wled/atomium/api") == ()  # a command topic is not a report
    world.report("zigbee2mqtt/bridge/state", '{"state":"online"}')
    views = world.stores.reports.views()
    assert (views["z-1"].online, views["z-2"].online, views["wled-1"].online) == (True, True, None)
    world.report("elsewhere/x", "1")
    assert world.metrics.rejected_messages.labels(reason="unrouted")._value.get() == 1


def test_a_window_start_sends_one_live_command_never_retained(w: World) -> None:
    w.at(START - timedelta(minutes=5))
    w.reconcile()  # off before the window
    w.report("wled/atomium/g", "0")
    assert w.latest("wled-1").state is S.APPLIED
    before = len(w.broker.published)
    w.at(START)
    w.reconcile()
    command = w.latest("wled-1")
    plan = command.plan
    assert len(plan.steps) == 1 and plan.steps[0].at == START and plan.not_after == END
    assert command.state is S.PUBLISHED
    sent = w.broker.published[before:]
    assert [p.topic for p in sent] == ["wled/atomium/api"]
    assert sent[0].retain is False and sent[0].qos == 1
    body = json.loads(sent[0].payload)
    assert body["on"] is True and body["bri"] == 204
    assert body["seg"] == {"col": [[0, 158, 219, 0]], "fx": 0}
    assert not any(p.topic.startswith("illuminate/") for p in w.broker.published)
    # nothing changes until the window's end: no new version on later runs
    w.at(START + timedelta(minutes=10))
    w.reconcile()
    assert w.latest("wled-1").version == command.version


def test_the_reported_state_confirms_echo_and_the_site_is_lit(w: World) -> None:
    w.at(START)
    w.reconcile()
    assert w.public()["atomium"] == "pending"
    w.report("wled/atomium/g", "204")
    assert w.latest("wled-1").state is S.PUBLISHED  # brightness alone confirms nothing
    w.report("wled/atomium/c", "#009EDB")
    command = w.latest("wled-1")
    assert command.state is S.APPLIED
    applied = [e for e in w.stores.outbox.events("wled-1") if e.to_state is S.APPLIED]
    assert applied[-1].detail == "confirmed by echo"
    assert w.stores.reports.views(["wled-1"])["wled-1"].confirmed_by == "echo"
    w.at(START + GRACE * 2)
    w.reconciler.run()
    assert w.latest("wled-1").state is S.APPLIED
    assert w.public()["atomium"] == "lit"


def test_a_wrong_colour_never_confirms_and_the_site_turns_unconfirmed(w: World) -> None:
    w.at(START)
    w.reconcile()
    w.report("wled/atomium/g", "204")
    w.report("wled/atomium/c", "#DB0000")
    assert w.latest("wled-1").state is S.PUBLISHED
    w.at(START + GRACE + timedelta(seconds=1))
    w.reconciler.run()
    assert w.latest("wled-1").state is S.UNCONFIRMED
    assert w.public()["atomium"] == "unconfirmed"


def test_the_window_end_sends_off_and_off_confirms(w: World) -> None:
    w.at(START)
    w.reconcile()
    result = w.reconciler.run()
    assert END in result.wake_at  # the timer wakes the reconciler at the window's end
    w.report("wled/atomium/g", "204")
    w.report("wled/atomium/c", "#009EDB")
    w.at(END)
    w.reconcile()
    off = w.latest("wled-1")
    assert off.plan.steps[0].state.on is False
    assert w.sent("wled/atomium/api")[-1]["on"] is False
    w.report("wled/atomium/g", "0")
    assert w.latest("wled-1").state is S.APPLIED
    assert w.public()["atomium"] == "off"


def test_a_command_never_goes_out_after_its_not_after(w: World) -> None:
    w.at(START)
    w.broker.disconnect()
    w.reconciler.run()
    assert w.latest("wled-1").state is S.PENDING
    w.at(END + timedelta(seconds=1))
    w.broker.connect()
    w.dispatcher.step()
    lit = w.stores.outbox.get([("wled-1", 1)])[("wled-1", 1)]
    assert lit.state is S.EXPIRED
    assert not any(b.get("on") for b in w.sent("wled/atomium/api"))


def test_a_device_back_online_is_sent_the_current_state_again(w: World) -> None:
    w.report("wled/atomium/status", "offline", retain=True)
    w.at(START)
    w.reconcile()
    assert w.public()["atomium"] == "offline"
    sent = len(w.sent("wled/atomium/api"))
    outcome = w.report("wled/atomium/status", "online", retain=True)
    assert outcome.resend == {"wled-1"}
    w.dispatcher.republish("wled-1")  # what the controller does with `resend`
    w.dispatcher.step()
    assert len(w.sent("wled/atomium/api")) == sent + 1
    assert w.sent("wled/atomium/api")[-1]["on"] is True
    # only a change to online asks for it
    assert w.report("wled/atomium/status", "online", retain=True).resend == set()


def test_a_drifted_device_is_sent_the_desired_state_again(w: World) -> None:
    w.at(START)
    w.reconcile()
    w.report("wled/atomium/g", "204")
    w.report("wled/atomium/c", "#009EDB")
    first = w.latest("wled-1")
    outcome = w.report("wled/atomium/c", "#FF0000")  # someone changed it by hand
    assert outcome.drift
    assert w.latest("wled-1").state is S.DRIFTED
    w.at(START + timedelta(minutes=1))
    w.reconcile()
    again = w.latest("wled-1")
    assert again.version > first.version and again.plan.steps[0].at == START
    assert w.sent("wled/atomium/api")[-1]["seg"] == {"col": [[0, 158, 219, 0]], "fx": 0}


def test_malformed_messages_are_counted_and_ignored(w: World) -> None:
    w.at(START)
    w.reconcile()
    for bad in (b"\xff\xfe", b"#GGGGGG", b"9" * 5000, b""):
        w.report("wled/atomium/c", bad)
    w.report("wled/atomium/g", "nope")
    assert w.metrics.adapter_malformed.labels(adapter="wled")._value.get() == 5
    w.report("wled/atomium/g", "204")
    w.report("wled/atomium/c", "#009EDB")
    assert w.latest("wled-1").state is S.APPLIED


def test_a_state_request_after_the_echo_brings_a_readback() -> None:
    world = World({"z-1": ("belfry", "zigbee2mqtt", Z2M)})
    world.report("zigbee2mqtt/belfry/flood1/availability", '{"state":"online"}', retain=True)
    world.at(START)
    world.reconcile()
    (sent,) = world.sent("zigbee2mqtt/belfry/flood1/set")
    echo = json.dumps({"state": "ON", "brightness": sent["brightness"], "color": sent["color"]})
    outcome = world.report("zigbee2mqtt/belfry/flood1", echo)
    assert outcome.state_requests == {"z-1": world.latest("z-1").version}
    world.report("zigbee2mqtt/belfry/flood1", echo)  # the answer to the /get
    details = [e.detail for e in world.stores.outbox.events("z-1") if e.to_state is S.APPLIED]
    assert details == ["confirmed by echo", "confirmed by readback"]
    view = world.stores.reports.views(["z-1"])["z-1"]
    assert view.confirmed_by == "readback"
    status = public_status(world.stores.snapshot(), world.clock(), GRACE, timedelta(hours=24))
    (belfry,) = [s for s in status.sites if s.id == "belfry"]
    assert (belfry.state.value, belfry.confirmed_by) == ("lit", "readback")


def test_after_a_reconnection_the_devices_awaiting_their_report_are_asked_again() -> None:
    """A light's answer sent while the link was away is lost (QoS 0, not retained): on
    the reconnection it is asked to report again, and its answer confirms the command.
    A confirmed light, and the first connection, ask nothing."""
    world = World(
        {
            "z-1": ("belfry", "zigbee2mqtt", Z2M),
            "z-2": ("belfry", "zigbee2mqtt", {**Z2M, "friendly_name": "belfry/flood2"}),
        }
    )
    asker = AskAgainOnReconnect(
        world.stores.outbox, world.adapters.all, world.broker, run=lambda work: work()
    )
    world.broker.add_listener(asker)
    world.broker.disconnect()
    world.broker.connect()  # the asker's first connection: nothing to ask
    assert world.sent("zigbee2mqtt/belfry/flood1/get") == []
    for light in ("flood1", "flood2"):
        world.report(f"zigbee2mqtt/belfry/{light}/availability", '{"state":"online"}', True)
    world.at(START)
    world.reconcile()
    (sent,) = world.sent("zigbee2mqtt/belfry/flood2/set")
    echo = json.dumps({"state": "ON", "brightness": sent["brightness"], "color": sent["color"]})
    world.report("zigbee2mqtt/belfry/flood2", echo)
    assert world.latest("z-1").state is S.PUBLISHED  # its answer is lost while away
    assert world.latest("z-2").state is S.APPLIED
    world.broker.disconnect()
    world.broker.connect(resumed=True)
    assert len(world.sent("zigbee2mqtt/belfry/flood1/get")) == 1
    assert world.sent("zigbee2mqtt/belfry/flood2/get") == []
    world.report("zigbee2mqtt/belfry/flood1", echo)  # the answer to the /get
    assert world.latest("z-1").state is S.APPLIED


@pytest.mark.parametrize("resumed", [False, True], ids=["new session", "resumed session"])
def test_a_restarted_controller_asks_on_its_first_connection_when_the_session_resumed(
    resumed: bool,
) -> None:
    """A process's first connection: a new session gets every command sent again (no
    asking); a resumed one (the controller restarted within the session's expiry) does
    not, and what the devices said while it was down is lost as well: it asks."""
    world = World({"z-1": ("belfry", "zigbee2mqtt", Z2M)})
    runs: list[object] = []
    asker = AskAgainOnReconnect(
        world.stores.outbox, world.adapters.all, world.broker, run=runs.append
    )
    world.broker.add_listener(asker)
    world.broker.disconnect()
    world.broker.connect(resumed=resumed)
    assert len(runs) == (1 if resumed else 0)


def test_a_device_registered_later_is_followed_and_routed(w: World) -> None:
    followed: list[frozenset[str]] = []
    w.adapters.on_change = lambda: followed.append(w.adapters.report_topics())
    w.stores.registry.add_devices(
        [NewDevice("t-1", "belfry", None, "tasmota", {"topic": "fountain1"})], w.clock()
    )
    w.report("tele/fountain1/LWT", "Online", retain=True)  # each batch looks again
    assert followed and "stat/fountain1/RESULT" in followed[-1]
    assert "wled/atomium/g" in followed[-1]
    assert w.stores.reports.views(["t-1"])["t-1"].online is True
    assert w.adapters.refresh() is False  # nothing moved since: no second look


def test_a_moved_end_is_a_new_live_command_with_the_new_not_after(w: World) -> None:
    w.at(START)
    w.reconcile()
    first = w.latest("wled-1")
    body = BLUE.model_dump(mode="json")
    body["windows"][0]["end"] = {"at": "22:30"}
    w.stores.campaigns.put(Campaign.model_validate(body), w.clock())
    w.at(START + timedelta(minutes=1))
    w.reconcile()
    moved = w.latest("wled-1")
    assert moved.version > first.version
    assert moved.plan.steps[0].at == START  # the lit step keeps its true start
    assert moved.plan.not_after == END - timedelta(minutes=30)


def test_health_hears_of_live_messages_only(w: World) -> None:
    seen: list[str] = []
    w.intake.on_seen = lambda device_id, _now: seen.append(device_id)
    w.report("wled/atomium/c", "#009EDB", retain=True)  # said some time ago
    assert seen == []
    w.report("wled/atomium/g", "204")
    assert seen == ["wled-1"]


class FlakyReports:
    """The report store, down for its first `down` reads (a database outage)."""

    def __init__(self, inner: object, down: int) -> None:
        self.inner = inner
        self.down = down

    def views(self, *args: object, **kwargs: object) -> object:
        if self.down > 0:
            self.down -= 1
            raise RuntimeError("database is locked")
        return self.inner.views(*args, **kwargs)  # type: ignore[attr-defined]

    def save(self, *args: object, **kwargs: object) -> object:
        return self.inner.save(*args, **kwargs)  # type: ignore[attr-defined]


def test_a_database_outage_keeps_the_messages_until_they_are_stored(w: World) -> None:
    flaky = FlakyReports(w.stores.reports, down=2)
    stores = replace(w.stores, reports=flaky)  # type: ignore[arg-type]
    intake = AdapterIntake(stores, w.adapters, w.clock, w.metrics)
    intake.put(Incoming("wled/atomium/status", b"offline", True))
    backlog = intake.backlog()
    assert backlog.count == 1 and backlog.oldest_at is not None
    intake.start()
    try:
        deadline = time.monotonic() + 30
        while w.stores.reports.views(["wled-1"])["wled-1"].online is not False:
            assert time.monotonic() < deadline, "the message was lost"
            time.sleep(0.02)
    finally:
        intake.stop()
    assert flaky.down == 0 and intake.backlog().count == 0


def test_a_barrier_passes_only_once_the_vendor_messages_before_it_are_stored(
    w: World,
) -> None:
    """The catch-up barrier (controller/barrier.py) through the vendor queue: the
    reconciler may call a light's command unconfirmed only once its reports that reached
    the broker in time are stored, however far behind this intake is."""
    flaky = FlakyReports(w.stores.reports, down=2)
    stores = replace(w.stores, reports=flaky)  # type: ignore[arg-type]
    intake = AdapterIntake(stores, w.adapters, w.clock, w.metrics)
    while_storing: list[datetime | None] = []
    intake.on_outcome = lambda _o: while_storing.append(intake.caught_up_to())
    at = w.clock()
    intake.put(Incoming("wled/atomium/status", b"offline", True))
    intake.put_barrier(at)
    intake.put(Incoming("wled/atomium/status", b"online", True))
    intake.put_barrier(at + timedelta(seconds=1))
    assert intake.caught_up_to() is None
    intake.start()
    try:
        deadline = time.monotonic() + 30
        while intake.caught_up_to() != at + timedelta(seconds=1):
            assert time.monotonic() < deadline, f"caught up to {intake.caught_up_to()}"
            time.sleep(0.02)
    finally:
        intake.stop()
    assert flaky.down == 0  # the database refused twice before the barriers passed
    assert while_storing == [None]  # not passed while the batch was being stored
    assert w.stores.reports.views(["wled-1"])["wled-1"].online is True


def test_a_light_behind_a_dead_bridge_is_offline_whatever_its_own_retained_status_says() -> None:
    """A fresh subscriber gets the bridge's last will (offline) and then the light's
    stale retained `online`: the light is online only while both say so."""
    world = World({"z-1": ("belfry", "zigbee2mqtt", Z2M)})

    def online() -> bool | None:
        return world.stores.reports.views(["z-1"])["z-1"].online

    world.report("zigbee2mqtt/bridge/state", '{"state":"offline"}', retain=True)
    world.report("zigbee2mqtt/belfry/flood1/availability", '{"state":"online"}', retain=True)
    assert online() is False
    world.report("zigbee2mqtt/bridge/state", '{"state":"online"}', retain=True)
    assert online() is True
    world.report("zigbee2mqtt/belfry/flood1/availability", '{"state":"offline"}', retain=True)
    assert online() is False  # the light left the mesh; the bridge is fine
    world.report("zigbee2mqtt/belfry/flood1", '{"state":"ON","brightness":200}')
    assert online() is True  # a live report: it is back, whatever was said before
