"""The intake and its inbox on in-memory stores and a fake clock: no broker, no sleeps."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from controller.barrier import encode_barrier
from controller.broker.base import Incoming
from controller.inbox import Inbox
from controller.intake import Intake
from controller.lifecycle import CommandState as S
from controller.metrics import Metrics
from controller.store.base import NewDevice, NewVersion, Stores
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import MAX_REPORTED_VERSION, MAX_VERSION, Plan, PlanStep, Topics, encode
from devices.protocol import LightState as L
from schedules.model import SiteCatalog

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
STEP = T0 + timedelta(minutes=30)
BLUE = L(on=True, color="#009EDB", level=80)
RED = L(on=True, color="#C8102E", level=80)
OFF = L(on=False)
TOPICS = Topics()
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "bxl", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {"id": f"s{i}", "city": "bxl", "name": {"en": f"S{i}"}, "lat": 50.8, "lon": 4.3}
            for i in range(3)
        ],
    }
)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0 + timedelta(minutes=31))
        self.stores: Stores = memory_stores()
        self.stores.registry.import_catalog(CATALOG)
        self.stores.registry.add_devices([NewDevice(f"d{i}", f"s{i}") for i in range(3)], T0)
        self.metrics = Metrics()
        self.inbox = Inbox(TOPICS, per_device=4, on_drop=self.drop)
        self.drops: list[str] = []
        self.intake = Intake(self.stores, TOPICS, self.inbox, self.clock, self.metrics)
        plan = Plan(
            version=1,
            issued_at=T0,
            steps=[PlanStep(at=T0, state=OFF), PlanStep(at=STEP, state=BLUE)],
        )
        self.stores.outbox.add_versions(
            [NewVersion(f"d{i}", 1, encode(plan).decode(), T0, None) for i in range(3)]
        )

    def drop(self, reason: str) -> None:
        self.drops.append(reason)

    def ack(self, sender: str, stage: str, version: int = 1, **extra: object) -> Incoming:
        body = {"v": 1, "version": version, "stage": stage, **extra}
        return Incoming(TOPICS.ack(sender), json.dumps(body).encode(), False)

    def applied(self, device: str, state: L = BLUE, step: datetime = STEP) -> Incoming:
        return self.ack(
            device,
            "applied",
            step_at=iso(step),
            applied_at=iso(step),
            state=state.model_dump(mode="json"),
        )

    def report(
        self,
        device: str,
        state: L = BLUE,
        version: int | None = 1,
        step: datetime | None = STEP,
        retain: bool = True,
        at: datetime | None = None,
    ) -> Incoming:
        body: dict[str, object] = {
            "v": 1,
            "state": state.model_dump(mode="json"),
            "reported_at": iso(at or STEP),
        }
        if version is not None:
            body["plan_version"] = version
        if step is not None:
            body["step_at"] = iso(step)
        return Incoming(TOPICS.state(device), json.dumps(body).encode(), retain)

    def status(self, device: str, online: bool, retain: bool = True) -> Incoming:
        return Incoming(
            TOPICS.status(device), json.dumps({"v": 1, "online": online}).encode(), retain
        )

    def state_of(self, device: str) -> S:
        return self.stores.outbox.latest()[device].state

    def view(self, device: str):
        return self.stores.reports.views({device})[device]


@pytest.fixture
def w() -> World:
    return World()


def test_one_batch_walks_the_lifecycle_and_records_the_apply(w: World) -> None:
    out = w.intake.process(
        [w.ack("d0", "received"), w.ack("d0", "armed"), w.applied("d0"), w.ack("d1", "received")]
    )
    assert w.state_of("d0") is S.APPLIED
    assert w.state_of("d1") is S.RECEIVED
    assert out.moves == 4
    view = w.view("d0")
    assert (view.applied_version, view.applied_step_at, view.online) == (1, STEP, True)
    assert [e.to_state for e in w.stores.outbox.events("d0")] == [
        S.PENDING,
        S.RECEIVED,
        S.ARMED,
        S.APPLIED,
    ]


def test_an_apply_of_the_wrong_output_fails_the_command(w: World) -> None:
    w.intake.process([w.applied("d0", state=RED)])
    assert w.state_of("d0") is S.FAILED
    assert w.view("d0").applied_version is None
    assert w.metrics.rejected("state_mismatch") == 1


def test_a_repeated_apply_report_is_no_write_and_keeps_the_first_time(w: World) -> None:
    w.intake.process([w.applied("d0")])
    events = len(w.stores.outbox.events("d0"))
    again = w.ack(
        "d0",
        "applied",
        step_at=iso(STEP),
        applied_at=iso(STEP + timedelta(seconds=9)),
        state=BLUE.model_dump(mode="json"),
    )
    out = w.intake.process([again])
    assert (out.moves, out.reports) == (0, 0)
    assert len(w.stores.outbox.events("d0")) == events
    assert w.view("d0").applied_at == STEP


def test_retained_status_that_changes_nothing_writes_nothing(w: World) -> None:
    assert w.intake.process([w.status("d0", True)]).reports == 1
    assert w.intake.process([w.status("d0", True), w.status("d0", True)]).reports == 0


def test_a_state_report_confirms_a_step_whose_ack_was_lost(w: World) -> None:
    w.intake.process([w.report("d2")])
    assert w.state_of("d2") is S.APPLIED
    assert w.view("d2").applied_step_at == STEP


def test_a_report_of_an_older_plan_asks_for_a_republish(w: World) -> None:
    out = w.intake.process([w.report("d0", version=None, step=None)])
    assert out.stale_plans == {"d0"}


def test_a_version_beyond_ours_raises_the_floor_and_asks_to_replan(w: World) -> None:
    out = w.intake.process([w.report("d0", version=9)])
    assert out.drift is True
    assert w.view("d0").version_floor == 9


def test_other_output_after_an_apply_is_drift(w: World) -> None:
    w.intake.process([w.applied("d0")])
    out = w.intake.process([w.report("d0", state=RED, at=STEP + timedelta(minutes=1))])
    assert out.drift is True
    assert w.state_of("d0") is S.DRIFTED


def test_bad_messages_are_counted_and_the_rest_of_the_batch_goes_on(w: World) -> None:
    batch = [
        Incoming(TOPICS.ack("d0"), b"{not json", False),
        Incoming(
            TOPICS.ack("ghost"),
            json.dumps({"v": 1, "version": 1, "stage": "armed"}).encode(),
            False,
        ),
        w.ack("d0", "armed", device="d1"),
        w.ack("d0", "armed", version=77),
        w.ack("d1", "armed"),
    ]
    w.intake.process(batch)
    assert w.state_of("d1") is S.ARMED
    assert w.state_of("d0") is S.PENDING
    assert w.metrics.rejected("unregistered") == 1
    assert w.metrics.rejected("device_mismatch") == 1
    assert w.metrics.rejected("unknown_version") == 1


def test_a_device_registered_later_is_seen_within_a_second(w: World) -> None:
    w.intake.process([w.ack("d0", "armed")])
    w.stores.registry.add_devices([NewDevice("late", "s0")], T0)
    msg = w.status("late", True)
    w.intake.process([msg])
    assert w.view("late").online is None  # the registry was read under a second ago
    w.clock.advance(1.0)
    w.intake.process([msg])
    assert w.view("late").online is True


class FailingOnce:
    """The reports store, failing its first save like a locked database."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.failures = 1

    def views(self, ids=None):
        return self.inner.views(ids)

    def save(self, views):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        return self.inner.save(views)


def test_a_database_error_keeps_the_batch_for_a_retry(w: World) -> None:
    stores = Stores(
        w.stores.registry, w.stores.campaigns, w.stores.outbox, FailingOnce(w.stores.reports)
    )
    intake = Intake(stores, TOPICS, w.inbox, w.clock, w.metrics)
    batch = [w.applied("d0")]
    with pytest.raises(RuntimeError):
        intake.process(batch)
    intake.process(batch)  # what the loop does: the same batch again
    assert w.state_of("d0") is S.APPLIED
    assert w.view("d0").applied_step_at == STEP


# the inbox -------------------------------------------------------------------------


def test_inbox_coalesces_reports_keeps_acks_in_order_and_bounds_each_device(w: World) -> None:
    for i in range(3):
        w.inbox.put(w.report("d0", at=STEP + timedelta(seconds=i)))
    for stage in ("received", "armed", "received", "armed", "received", "armed"):
        w.inbox.put(w.ack("d0", stage))
    taken = w.inbox.take(100, timeout=0)
    kinds = [TOPICS.parse(m.topic).kind.value for m in taken]
    assert kinds == ["state", "ack", "ack", "ack", "ack"]
    assert json.loads(taken[0].payload)["reported_at"] == iso(STEP + timedelta(seconds=2))
    assert w.drops.count("coalesced") == 2
    assert w.drops.count("device_queue_full") == 2


def test_one_devices_flood_does_not_delay_another_device(w: World) -> None:
    inbox = Inbox(TOPICS, per_device=1000)
    for i in range(1000):
        inbox.put(w.ack("d0", "armed", reason=f"flood {i}"))
    inbox.put(w.applied("d1"))
    first = inbox.take(10, timeout=0)
    second = inbox.take(10, timeout=0)
    devices = [TOPICS.parse(m.topic).device_id for m in first + second]
    assert "d1" in devices
    assert len(inbox) == 1000 + 1 - 20


def test_inbox_ignores_topics_that_are_not_a_devices(w: World) -> None:
    w.inbox.put(Incoming("elsewhere/x", b"{}", False))
    w.inbox.put(Incoming(TOPICS.plan("d0"), b"{}", True))
    assert w.inbox.take(10, timeout=0) == []
    assert w.drops == ["not_a_device_topic", "not_a_device_topic"]


def test_a_message_from_a_device_registered_just_after_it_spoke_is_not_lost(w: World) -> None:
    w.intake.process([w.status("new-one", True)])  # not registered yet: held
    assert w.metrics.rejected("unregistered") == 1
    w.stores.registry.add_devices([NewDevice("new-one", "s0")], T0)
    w.intake.forget_registry()  # what the controller does on a registration
    w.intake.process([])
    assert w.view("new-one").online is True


class Poisoned:
    """The reports store refusing any batch holding device d0's report, as a database
    refuses a value it cannot store."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def views(self, ids=None):
        return self.inner.views(ids)

    def save(self, views):
        if any(v.id == "d0" for v in views):
            raise RuntimeError("invalid byte sequence")
        return self.inner.save(views)


def test_a_message_that_cannot_be_stored_is_let_go_and_the_rest_is_kept(w: World) -> None:
    stores = Stores(
        w.stores.registry, w.stores.campaigns, w.stores.outbox, Poisoned(w.stores.reports)
    )
    intake = Intake(stores, TOPICS, w.inbox, w.clock, w.metrics)
    batch = [w.status("d0", True), w.applied("d1")]
    with pytest.raises(RuntimeError):
        intake.process(batch)
    assert intake.isolate(batch) == []
    assert w.state_of("d1") is S.APPLIED
    assert w.metrics.dropped("unstorable") == 1


def test_when_nothing_can_be_stored_the_database_is_at_fault_and_all_is_kept(w: World) -> None:
    stores = Stores(
        w.stores.registry, w.stores.campaigns, w.stores.outbox, Poisoned(w.stores.reports)
    )
    intake = Intake(stores, TOPICS, w.inbox, w.clock, w.metrics)
    with pytest.raises(RuntimeError):
        intake.isolate([w.status("d0", True), w.status("d0", False)])
    assert w.metrics.dropped("unstorable") == 0


def _barrier(at: datetime) -> Incoming:
    return Incoming(TOPICS.controller_barrier, encode_barrier(at), False)


def test_a_barrier_passes_once_every_message_put_before_it_is_taken() -> None:
    dropped: list[str] = []
    inbox = Inbox(TOPICS, on_drop=dropped.append)
    for device in ("d0", "d1"):
        inbox.put(Incoming(TOPICS.ack(device), b"{}", False))
    inbox.put(_barrier(T0))
    inbox.put(Incoming(TOPICS.ack("d2"), b"{}", False))
    inbox.put(_barrier(T0 + timedelta(seconds=5)))
    assert len(inbox.take(1, timeout=0)) == 1
    assert inbox.passed is None  # d1's message came before the first barrier
    assert len(inbox.take(1, timeout=0)) == 1
    assert inbox.passed == T0  # d2's came after it, before the second
    assert len(inbox.take(10, timeout=0)) == 1
    assert inbox.passed == T0 + timedelta(seconds=5)
    assert inbox.take(10, timeout=0) == [] and inbox.passed is None
    assert dropped == []


def test_an_empty_inbox_alone_is_no_catch_up() -> None:
    """The messages may still be in the socket or at the broker: only a barrier says."""
    inbox = Inbox(TOPICS)
    inbox.put(Incoming(TOPICS.ack("d0"), b"{}", False))
    assert len(inbox.take(10, timeout=0)) == 1
    assert inbox.passed is None
    inbox.put(_barrier(T0))
    assert inbox.take(10, timeout=0) == []  # nothing waits before it: passed at once
    assert inbox.passed == T0


def test_a_replaced_state_report_holds_the_barrier_that_came_after_the_first() -> None:
    """A newer state report replaces the waiting one, and keeps its place before the
    barrier: what the first said is not stored until the second is."""
    inbox = Inbox(TOPICS)
    inbox.put(Incoming(TOPICS.state("d0"), b'{"n":1}', True))
    inbox.put(Incoming(TOPICS.ack("d1"), b"{}", False))
    inbox.put(_barrier(T0))
    inbox.put(Incoming(TOPICS.state("d0"), b'{"n":2}', True))
    assert [m.payload for m in inbox.take(1, timeout=0)] == [b'{"n":2}']
    assert inbox.passed is None  # d1's ack still waits
    assert len(inbox.take(1, timeout=0)) == 1
    assert inbox.passed == T0


def test_a_malformed_or_retained_barrier_is_dropped_and_counted() -> None:
    dropped: list[str] = []
    inbox = Inbox(TOPICS, on_drop=dropped.append)
    inbox.put(Incoming(TOPICS.controller_barrier, b"not json", False))
    inbox.put(Incoming(TOPICS.controller_barrier, encode_barrier(T0), True))
    assert inbox.take(10, timeout=0) == [] and inbox.passed is None
    assert dropped == ["malformed_barrier"] * 2


def test_the_intake_is_caught_up_only_once_what_it_took_is_stored(w: World) -> None:
    w.inbox = Inbox(TOPICS)
    w.intake = Intake(w.stores, TOPICS, w.inbox, w.clock, w.metrics)
    w.intake.send_barrier = lambda at: w.inbox.put(_barrier(at))  # the broker's echo
    stored: list[datetime | None] = []
    w.intake.on_outcome = lambda _o: stored.append(w.intake.caught_up_to())
    w.inbox.put(w.applied("d0"))
    assert w.intake.caught_up_to() is None
    w.intake.start()
    try:
        deadline = time.monotonic() + 60
        while w.intake.caught_up_to() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.intake.stop()
    assert stored == [None]  # while the batch was being stored it was not caught up yet
    assert w.intake.caught_up_to() == w.clock()
    assert w.stores.outbox.latest()["d0"].state is S.APPLIED


def test_without_barriers_the_intake_never_says_it_is_caught_up(w: World) -> None:
    w.inbox = Inbox(TOPICS)
    w.intake = Intake(w.stores, TOPICS, w.inbox, w.clock, w.metrics)
    w.inbox.put(w.applied("d0"))
    w.intake.start()
    try:
        deadline = time.monotonic() + 60
        while w.stores.outbox.latest()["d0"].state is not S.APPLIED:
            assert time.monotonic() < deadline, "the ack was never stored"
            time.sleep(0.01)
        time.sleep(0.3)  # more turns of the loop, with the inbox empty
    finally:
        w.intake.stop()
    assert w.intake.caught_up_to() is None


def test_numbers_no_database_can_store_are_refused_at_the_edge_and_counted(w: World) -> None:
    # a plan version past a 32-bit column, or an ack for one: refused before any query,
    # so the device's planning goes on; its version floor stays where it was
    w.intake.process(
        [
            w.report("d0", version=MAX_REPORTED_VERSION + 1),
            w.report("d0", version=2**63),
            w.ack("d0", "armed", version=MAX_VERSION + 1),
            w.ack("d0", "armed", version=-(2**63) - 1),
            w.ack("d0", "armed", clock_offset_ms=10**12),
        ]
    )
    assert w.metrics.rejected("out_of_range") == 5
    assert w.stores.reports.views({"d0"})["d0"].version_floor == 0
    w.intake.process([w.report("d0", version=MAX_REPORTED_VERSION)])
    assert w.stores.reports.views({"d0"})["d0"].version_floor == MAX_REPORTED_VERSION
    assert MAX_REPORTED_VERSION < MAX_VERSION  # room to plan past what a device reports


def test_a_device_born_holding_an_older_plan_gets_the_newest_again(w: World) -> None:
    def birth(device: str, holds: int | None) -> Incoming:
        body: dict[str, object] = {"v": 1, "online": True}
        if holds is not None:
            body["plan_version"] = holds
        return Incoming(TOPICS.status(device), json.dumps(body).encode(), True)

    # no claim, or holding our newest (v1): nothing to send again
    assert w.intake.process([birth("d0", None), birth("d1", 1)]).stale_plans == set()
    v1 = w.stores.outbox.latest()["d1"]
    v2 = Plan(version=2, issued_at=T0, steps=[PlanStep(at=T0, state=BLUE)])
    w.stores.outbox.add_versions([NewVersion("d1", 2, encode(v2).decode(), T0, (v1.id, v1.state))])
    assert w.intake.process([birth("d1", 1)]).stale_plans == {"d1"}  # behind: again
