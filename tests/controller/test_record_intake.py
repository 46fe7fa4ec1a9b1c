"""The intake's side of the record: each step reported applied and each change of
online status is an event, written in one insert per batch. In-memory stores, fake clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from controller.broker.base import Incoming
from controller.inbox import Inbox
from controller.intake import Intake
from controller.lifecycle import CommandState as S
from controller.metrics import Metrics
from controller.store.base import DeviceView, NewDevice, NewVersion, ReportStore, Stores
from controller.store.history import DeviceEvent, EventKind, MemoryHistory
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import LightState, Plan, PlanStep, Topics, encode
from schedules.model import SiteCatalog

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
START = T0 + timedelta(minutes=30)
END = START + timedelta(hours=3)
BLUE = LightState(on=True, color="#009EDB", level=80)
OFF = LightState(on=False)
TOPICS = Topics()
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "bxl", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [{"id": "s0", "city": "bxl", "name": {"en": "S0"}, "lat": 50.8, "lon": 4.3}],
    }
)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class CountingHistory(MemoryHistory):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def add_events(self, events: Sequence[DeviceEvent]) -> int:
        self.calls.append(len(events))
        return super().add_events(events)


class FailingOnce:
    """A report store whose next save fails (the database went away mid-batch)."""

    def __init__(self, inner: ReportStore) -> None:
        self.inner = inner
        self.fail = False

    def views(self, device_ids=None):  # type: ignore[no-untyped-def]
        return self.inner.views(device_ids)

    def save(self, views: Sequence[DeviceView]) -> int:
        if self.fail:
            self.fail = False
            raise RuntimeError("database away")
        return self.inner.save(views)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(START + timedelta(seconds=1))
        base = memory_stores()
        self.reports = FailingOnce(base.reports)
        self.stores = Stores(base.registry, base.campaigns, base.outbox, self.reports)
        self.stores.registry.import_catalog(CATALOG)
        self.stores.registry.add_devices([NewDevice("d0", "s0")], T0)
        self.history = CountingHistory()
        self.intake = Intake(
            self.stores, TOPICS, Inbox(TOPICS), self.clock, Metrics(), history=self.history
        )
        plan = Plan(
            version=1,
            issued_at=T0,
            steps=[
                PlanStep(at=T0, state=OFF),
                PlanStep(at=START, state=BLUE),
                PlanStep(at=END, state=OFF),
            ],
        )
        self.stores.outbox.add_versions([NewVersion("d0", 1, encode(plan).decode(), T0, None)])

    def applied(self, step: datetime, state: LightState, applied: datetime) -> Incoming:
        body = {
            "v": 1,
            "version": 1,
            "stage": "applied",
            "step_at": iso(step),
            "applied_at": iso(applied),
            "state": state.model_dump(mode="json"),
        }
        return Incoming(TOPICS.ack("d0"), json.dumps(body).encode(), False)

    def report(self, step: datetime, state: LightState, at: datetime) -> Incoming:
        body = {
            "v": 1,
            "state": state.model_dump(mode="json"),
            "plan_version": 1,
            "step_at": iso(step),
            "reported_at": iso(at),
        }
        return Incoming(TOPICS.state("d0"), json.dumps(body).encode(), True)

    def status(self, online: bool) -> Incoming:
        body = json.dumps({"v": 1, "online": online}).encode()
        return Incoming(TOPICS.status("d0"), body, True)

    def steps(self) -> list[tuple[datetime, datetime, datetime, str | None]]:
        return [
            (e.step_at, e.applied_at, e.received_at, e.source)  # type: ignore[misc]
            for e in self.history.events(["d0"], kinds=[EventKind.STEP])
        ]


@pytest.fixture
def w() -> World:
    return World()


def test_a_windows_start_and_end_are_each_an_event_with_its_times(w: World) -> None:
    w.intake.process([w.applied(START, BLUE, START), w.report(START, BLUE, START)])
    taken_start = w.clock()
    w.clock.advance(timedelta(hours=3))
    w.intake.process([w.applied(END, OFF, END + timedelta(seconds=0.2))])
    assert w.steps() == [
        (START, START, taken_start, "ack"),
        (END, END + timedelta(seconds=0.2), w.clock(), "ack"),
    ]
    assert w.stores.outbox.latest()["d0"].state is S.APPLIED
    # a batch's events go in with one call (the first also has the device's coming
    # online: its first live message), and a batch with none makes no call
    assert w.history.calls == [2, 1]
    w.intake.process([w.report(END, OFF, END)])  # the retained state, told on every birth
    assert w.history.calls == [2, 1]


def test_an_ack_overtaken_by_the_next_steps_is_still_recorded(w: World) -> None:
    """After a restart the held acks and the retained state come in any order."""
    w.clock.advance(timedelta(hours=4))
    w.intake.process([w.report(END, OFF, END), w.applied(START, BLUE, START)])
    assert [(s[0], s[3]) for s in w.steps()] == [(END, "state"), (START, "ack")]
    assert w.history.calls == [3]  # with the live ack's "online"


def test_a_step_in_another_look_than_planned_is_no_event(w: World) -> None:
    red = LightState(on=True, color="#C8102E", level=80)
    w.intake.process([w.applied(START, red, START), w.report(START, red, START)])
    assert w.steps() == []


def test_status_changes_are_events_and_repeats_are_not(w: World) -> None:
    w.intake.process([w.status(True)])
    w.intake.process([w.status(True)])
    w.clock.advance(60)
    w.intake.process([w.status(False)])
    w.clock.advance(60)
    # a live ack proves the device is back, whatever status was missed
    w.intake.process([w.applied(START, BLUE, START)])
    got = [(e.kind, e.received_at) for e in w.history.events(["d0"])]
    assert got == [
        (EventKind.ONLINE, START + timedelta(seconds=1)),
        (EventKind.OFFLINE, START + timedelta(seconds=61)),
        (EventKind.ONLINE, START + timedelta(seconds=121)),
        (EventKind.STEP, START + timedelta(seconds=121)),
    ]


def test_a_batch_decided_again_after_a_failure_keeps_its_steps_once(w: World) -> None:
    w.reports.fail = True
    batch = [w.applied(START, BLUE, START)]
    with pytest.raises(RuntimeError):
        w.intake.process(batch)
    w.intake.process(batch)
    assert [s[0] for s in w.steps()] == [START]
    assert w.stores.reports.views(["d0"])["d0"].applied_step_at == START
