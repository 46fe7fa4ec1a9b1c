"""Expiry: a command that cannot be published before its `not_after` is EXPIRED and never
published; a live command's `not_after` defaults to its window's end. On a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.broker.memory import MemoryBroker
from controller.dispatch import Dispatcher
from controller.lifecycle import CommandState as S
from controller.live import live_command
from controller.metrics import Metrics
from controller.plansteps import SiteSteps
from controller.store.base import NewDevice, NewVersion, Stores
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import LightState, Plan, PlanStep, Topics, encode
from schedules.model import Light, SiteCatalog
from schedules.resolve import Segment

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
TOPICS = Topics()
BLUE = LightState(on=True, color="#009EDB", level=80)


def command(version: int, not_after: datetime | None) -> str:
    plan = Plan(
        version=version,
        issued_at=T0,
        not_after=not_after,
        steps=[PlanStep(at=T0 + timedelta(seconds=10), state=BLUE)],
    )
    return encode(plan).decode()


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.stores: Stores = memory_stores()
        self.stores.registry.import_catalog(
            SiteCatalog.model_validate(
                {
                    "cities": [{"id": "c", "name": {"en": "C"}, "timezone": "Europe/Brussels"}],
                    "sites": [{"id": "s", "city": "c", "name": {"en": "S"}, "lat": 50, "lon": 4}],
                }
            )
        )
        self.stores.registry.add_devices([NewDevice("d0", "s"), NewDevice("d1", "s")], T0)
        self.broker = MemoryBroker(lambda _m: None)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.stores.outbox, self.broker, TOPICS, self.clock, self.metrics, 10.0
        )
        self.broker.add_listener(self.dispatcher)
        self.broker.connect()

    def issue(self, device_id: str, version: int, not_after: datetime | None) -> None:
        latest = self.stores.outbox.latest([device_id]).get(device_id)
        self.stores.outbox.add_versions(
            [
                NewVersion(
                    device_id,
                    version,
                    command(version, not_after),
                    self.clock(),
                    (latest.id, latest.state) if latest else None,
                )
            ]
        )
        self.dispatcher.wake()

    def state(self, device_id: str) -> S:
        return self.stores.outbox.latest([device_id])[device_id].state


def test_a_command_past_not_after_becomes_expired_and_is_never_published() -> None:
    w = World()
    w.broker.disconnect()  # the broker is down when the window opens
    w.issue("d0", 1, not_after=T0 + timedelta(minutes=5))
    w.issue("d1", 1, not_after=None)
    w.dispatcher.step()
    w.clock.advance(timedelta(minutes=5, seconds=1))  # back only after not_after
    w.broker.connect()
    w.dispatcher.step()
    assert w.broker.topics() == [TOPICS.plan("d1")]
    assert w.state("d0") is S.EXPIRED
    events = [e for e in w.stores.outbox.events() if e.device_id == "d0"]
    assert [e.to_state for e in events] == [S.PENDING, S.EXPIRED]
    assert events[-1].detail == "not_after passed before it could be published"
    assert w.metrics.registry.get_sample_value("illuminate_commands_expired_total") == 1
    for _ in range(3):  # never later either, however often it is asked for again
        w.clock.advance(60)
        w.dispatcher.republish()
        w.dispatcher.step()
    assert TOPICS.plan("d0") not in w.broker.topics()


def test_a_command_published_before_not_after_is_not_sent_again_after_it() -> None:
    w = World()
    w.issue("d0", 1, not_after=T0 + timedelta(minutes=5))
    w.dispatcher.step()
    assert w.broker.topics() == [TOPICS.plan("d0")]  # within its time: published
    w.broker.ack()
    w.dispatcher.step()
    assert w.state("d0") is S.PUBLISHED
    w.clock.advance(timedelta(minutes=6))
    w.broker.disconnect()
    w.broker.connect()  # a reconnect publishes every newest command again...
    w.dispatcher.step()
    assert w.broker.topics() == [TOPICS.plan("d0")]  # ...but not this one any more


def test_a_command_at_its_not_after_is_still_published() -> None:
    w = World()
    w.clock.advance(timedelta(minutes=5))
    w.issue("d0", 1, not_after=T0 + timedelta(minutes=5))
    w.dispatcher.step()
    assert w.broker.topics() == [TOPICS.plan("d0")]


def segment(start_h: float, end_h: float) -> Segment:
    return Segment(
        site="s",
        campaign="blue-heart",
        start=T0 + timedelta(hours=start_h),
        end=T0 + timedelta(hours=end_h),
        light=Light(on=True, color="#009EDB", level=80),
    )


def test_a_live_commands_not_after_defaults_to_its_windows_end() -> None:
    steps = SiteSteps([segment(1, 6)])
    now = T0 + timedelta(hours=1, seconds=3)
    cmd = live_command(steps.steps(now, now + timedelta(hours=48)), now, version=4)
    assert cmd is not None
    assert [(s.at, s.state) for s in cmd.steps] == [(T0 + timedelta(hours=1), BLUE)]
    assert cmd.not_after == T0 + timedelta(hours=6)  # the window's end
    given = T0 + timedelta(hours=1, minutes=5)
    early = live_command(steps.steps(now, now), now, 4, not_after=given)
    assert early is not None and early.not_after == given
    after = T0 + timedelta(hours=7)  # the off after the window lasts until nothing follows
    off = live_command(steps.steps(after, after + timedelta(hours=48)), after, version=5)
    assert off is not None and not off.steps[0].state.on and off.not_after is None
