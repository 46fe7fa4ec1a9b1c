"""The dispatcher on the in-memory broker and stores, with a fake clock: no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.broker.base import Incoming
from controller.broker.memory import MemoryBroker
from controller.dispatch import REPUBLISH_EVERY_S, Dispatcher
from controller.lifecycle import CommandState as S
from controller.metrics import Metrics
from controller.store.base import Move, NewDevice, NewVersion, Stores
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import Topics
from schedules.model import SiteCatalog

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
TOPICS = Topics()
TIMEOUT_S = 10.0


def payload(version: int) -> str:
    return (
        f'{{"v":1,"version":{version},"issued_at":"2026-07-30T19:00:00Z",'
        '"steps":[{"at":"2026-07-30T19:00:00Z","state":{"on":false}}]}'
    )


class World:
    def __init__(self, devices: int = 3) -> None:
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
        self.ids = [f"d{i}" for i in range(devices)]
        self.stores.registry.add_devices([NewDevice(i, "s") for i in self.ids], T0)
        self.received: list[Incoming] = []
        self.broker = MemoryBroker(self.received.append)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.stores.outbox, self.broker, TOPICS, self.clock, self.metrics, TIMEOUT_S
        )
        self.broker.add_listener(self.dispatcher)
        self.broker.connect()

    def issue(self, version: int = 1) -> None:
        latest = self.stores.outbox.latest()
        self.stores.outbox.add_versions(
            [
                NewVersion(
                    d,
                    version,
                    payload(version),
                    self.clock(),
                    (latest[d].id, latest[d].state) if d in latest else None,
                )
                for d in self.ids
            ]
        )

    def states(self) -> list[S]:
        latest = self.stores.outbox.latest()
        return [latest[d].state for d in self.ids]


@pytest.fixture
def w() -> World:
    return World()


def test_every_pending_row_is_published_at_once_and_turns_published_on_its_puback(w: World):
    w.issue()
    w.dispatcher.step()
    assert sorted(w.broker.topics()) == sorted(TOPICS.plan(d) for d in w.ids)
    assert all(p.retain for p in w.broker.published)
    assert w.states() == [S.PENDING] * 3  # transport not yet acknowledged
    w.broker.ack(TOPICS.plan("d1"))
    assert w.dispatcher.step() == 1
    assert w.states() == [S.PENDING, S.PUBLISHED, S.PENDING]
    w.broker.ack()
    assert w.dispatcher.step() == 2
    assert w.states() == [S.PUBLISHED] * 3
    assert len(w.broker.published) == 3  # nothing published twice
    assert w.metrics.registry.get_sample_value("illuminate_plans_published_total") == 3


def test_acks_whose_commit_fails_are_kept_and_not_published_again(w: World) -> None:
    """The PUBLISHED moves are committed after the round's publishing: when the commit
    fails (the database is busy) they wait for the next round, and a re-read of the
    outbox (a reconnect resets its cursor) does not send those rows again meanwhile."""
    w.issue()
    w.dispatcher.step()
    w.broker.ack()
    real_move = w.stores.outbox.move
    calls = []

    def busy(moves: list[Move]) -> list[bool]:
        calls.append(len(moves))
        raise RuntimeError("database is locked")

    w.stores.outbox.move = busy  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        w.dispatcher.step()
    assert calls == [3]
    w.stores.outbox.move = real_move  # type: ignore[method-assign]
    w.dispatcher._cursor = None  # read from the outbox's start, as after a reconnect
    w.dispatcher.wake()
    assert w.dispatcher.step() == 3
    assert w.states() == [S.PUBLISHED] * 3
    assert len(w.broker.published) == 3  # nothing published twice


def test_a_publish_not_acknowledged_in_time_is_sent_again(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.clock.advance(TIMEOUT_S - 0.1)
    w.dispatcher.step()
    assert len(w.broker.published) == 3  # still within the timeout
    w.clock.advance(0.2)
    w.dispatcher.step()
    assert len(w.broker.published) == 6
    assert w.broker.published[3].payload == w.broker.published[0].payload  # same version
    w.broker.ack()
    w.dispatcher.step()
    assert w.states() == [S.PUBLISHED] * 3


def test_a_wall_clock_jump_does_not_time_publishes_out(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.clock.jump(timedelta(hours=1))
    w.dispatcher.step()
    assert len(w.broker.published) == 3


def test_nothing_is_published_while_disconnected_and_all_goes_out_on_reconnect(w: World):
    w.broker.disconnect()
    w.issue()
    w.dispatcher.step()
    assert w.broker.published == []
    w.broker.connect()  # the dispatcher listens: every device's newest plan again
    w.dispatcher.step()
    assert len(w.broker.published) == 3


def test_a_resumed_session_keeps_the_retained_plans_and_a_new_one_gets_them_again(
    w: World,
) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.ack()
    w.dispatcher.step()
    assert w.states() == [S.PUBLISHED] * 3
    w.broker.disconnect()  # the broker closed us for an account change: it kept all
    w.broker.connect(resumed=True)
    w.dispatcher.step()
    assert len(w.broker.published) == 3  # nothing published again
    w.broker.disconnect()  # a broker that came back without its state
    w.broker.connect(resumed=False)
    w.dispatcher.step()
    assert len(w.broker.published) == 6
    assert {p.topic for p in w.broker.published[3:]} == {TOPICS.plan(d) for d in w.ids}


def test_a_plan_in_flight_over_a_resumed_session_still_goes_out_again(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.disconnect()  # PUBACKs never come on the old connection
    w.broker.connect(resumed=True)
    w.dispatcher.step()
    assert len(w.broker.published) == 3
    w.clock.advance(TIMEOUT_S + 1)
    w.dispatcher.step()
    assert len(w.broker.published) == 6
    w.broker.ack()
    w.dispatcher.step()
    assert w.states() == [S.PUBLISHED] * 3


def test_a_lost_connection_loses_no_plan(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.disconnect()  # PUBACKs never come
    w.clock.advance(TIMEOUT_S + 1)
    w.dispatcher.step()
    w.broker.connect()
    w.dispatcher.step()
    w.broker.ack()
    w.dispatcher.step()
    assert w.states() == [S.PUBLISHED] * 3


def test_a_device_with_a_stale_plan_gets_the_newest_again(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.ack()
    w.dispatcher.step()
    before = len(w.broker.published)
    w.dispatcher.republish("d2")
    w.dispatcher.step()
    assert w.broker.topics()[before:] == [TOPICS.plan("d2")]


def test_a_device_that_keeps_asking_gets_its_plan_again_once_per_interval(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.ack()
    w.dispatcher.step()
    before = len(w.broker.published)
    for _ in range(50):  # a flood of reports saying it lacks its plan
        w.dispatcher.republish("d2")
        w.dispatcher.step()
        w.broker.ack()
    assert w.broker.topics()[before:] == [TOPICS.plan("d2")]
    assert w.metrics.republish_skipped._value.get() == 49
    w.clock.advance(REPUBLISH_EVERY_S)
    w.dispatcher.republish("d2")
    w.dispatcher.step()
    assert w.broker.topics()[before:] == [TOPICS.plan("d2")] * 2


def test_a_refused_publish_stays_pending_and_is_sent_again(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    w.broker.ack(TOPICS.plan("d0"), ok=False)
    w.dispatcher.step()
    assert w.states()[0] is S.PENDING
    assert w.broker.topics().count(TOPICS.plan("d0")) == 1  # not in a hot loop...
    w.clock.advance(TIMEOUT_S)
    w.dispatcher.step()
    assert w.broker.topics().count(TOPICS.plan("d0")) == 2  # ...but after the timeout


def test_an_ack_overtaking_the_puback_is_not_undone(w: World) -> None:
    w.issue()
    w.dispatcher.step()
    d0 = w.stores.outbox.latest()["d0"]
    w.stores.outbox.move([Move(d0.id, S.ARMED, T0)])
    w.broker.ack()
    w.dispatcher.step()
    assert w.states()[0] is S.ARMED


def test_pubacks_alone_never_make_the_dispatcher_read_the_outbox(w: World) -> None:
    """A round per PUBACK that also read every pending row made a fan-out quadratic."""
    w.issue()
    w.dispatcher.step()
    reads = []
    real = w.stores.outbox.pending
    w.stores.outbox.pending = lambda limit=None, after=None: (
        reads.append(after) or real(limit, after)
    )  # type: ignore[method-assign]
    for topic in [TOPICS.plan(d) for d in w.ids]:
        w.broker.ack(topic)
        w.dispatcher.step()
    assert reads == []
    assert w.states() == [S.PUBLISHED] * 3
    w.dispatcher.wake()
    w.dispatcher.step()
    assert len(reads) == 1


def test_a_long_outbox_is_read_from_where_the_last_round_stopped() -> None:
    """Each round reads only the rows after the last one handed out, not the outbox
    from its start again (a fan-out of 10,000 read 2,000 rows a round)."""
    w = World(devices=7)
    w.dispatcher.max_in_flight = 3
    w.issue()
    reads: list[int | None] = []
    real = w.stores.outbox.pending
    w.stores.outbox.pending = lambda limit=None, after=None: (
        reads.append(after) or real(limit, after)
    )  # type: ignore[method-assign]
    w.dispatcher.step()
    first = [c.id for c in real()][:3]
    for _ in range(4):
        w.broker.ack()
        w.dispatcher.step()
    assert reads[0] is None and reads[1] == first[-1]
    later = [r for r in reads[1:] if r is not None]
    assert later == reads[1:] and later == sorted(later)  # always onwards from the cursor
    assert w.states() == [S.PUBLISHED] * 7


def test_a_publish_timed_out_behind_the_cursor_is_read_and_sent_again() -> None:
    w = World(devices=4)
    w.dispatcher.max_in_flight = 2
    w.issue()
    w.dispatcher.step()  # d0, d1 in flight
    w.broker.ack(TOPICS.plan("d1"))
    w.dispatcher.step()  # d1 published, d2 handed out; d0 still unacknowledged
    w.clock.advance(TIMEOUT_S)
    for _ in range(6):
        w.dispatcher.step()
        w.broker.ack()
    assert w.states() == [S.PUBLISHED] * 4
    assert w.broker.topics().count(TOPICS.plan("d0")) == 2


def test_no_more_than_the_window_is_in_flight_and_the_rest_follows() -> None:
    w = World(devices=7)
    w.dispatcher.max_in_flight = 3
    w.issue()
    w.dispatcher.step()
    assert len(w.broker.unacked()) == 3
    for _ in range(5):
        w.broker.ack()
        w.dispatcher.step()
        assert len(w.broker.unacked()) <= 3
    assert w.states() == [S.PUBLISHED] * 7
    before = len(w.broker.published)
    w.broker.disconnect()
    w.broker.connect()  # every newest plan again, through the same window
    w.dispatcher.step()
    assert len(w.broker.published) - before == 3
    for _ in range(5):
        w.broker.ack()
        w.dispatcher.step()
    assert len(w.broker.published) - before == 7
