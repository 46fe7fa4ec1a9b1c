"""The rules of the record (controller/windows.py), table-driven, on fixed instants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from controller.store.history import ControllerRun, DeviceEvent, EventKind, Verdict
from controller.windows import (
    Gap,
    Window,
    classify,
    down_periods,
    settled,
    site_windows,
    worst,
)
from devices.protocol import LightState
from schedules.model import Light
from schedules.resolve import Segment

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
GRACE = timedelta(seconds=30)
BLUE = LightState(on=True, color="#009EDB", level=80)
RED = LightState(on=True, color="#C8102E", level=80)
START = T0 + timedelta(hours=2)
END = START + timedelta(hours=3)
WINDOW = Window("menin-gate", "blue-heart", START, START, END, BLUE)


def m(minutes: float) -> datetime:
    """An instant `minutes` after the window's start."""
    return START + timedelta(minutes=minutes)


def step(
    received: datetime,
    at: datetime = START,
    state: LightState = BLUE,
    version: int = 1,
    applied: datetime | None = None,
) -> DeviceEvent:
    return DeviceEvent(
        "d1",
        EventKind.STEP,
        received,
        version=version,
        step_at=at,
        applied_at=applied or at,
        state=state.model_dump(mode="json"),
        source="ack",
    )


def status(received: datetime, online: bool) -> DeviceEvent:
    return DeviceEvent("d1", EventKind.ONLINE if online else EventKind.OFFLINE, received)


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[DeviceEvent, ...] = ()
    presence: tuple[DeviceEvent, ...] = ()
    gaps: tuple[Gap, ...] = ()
    verdict: Verdict = Verdict.UNCONFIRMED


DOWN_ACROSS = Gap(m(-10), m(200))
CASES = [
    Case("ack at the start", steps=(step(m(0.01)),), verdict=Verdict.CONFIRMED),
    Case("ack late but while it is open", steps=(step(m(90)),), verdict=Verdict.CONFIRMED),
    Case("ack at its very end", steps=(step(END),), verdict=Verdict.CONFIRMED),
    Case("ack only after its end", steps=(step(m(181)),), verdict=Verdict.CONFIRMED_LATE),
    Case(
        "controller down across it, device lit on its own",
        steps=(step(m(200.5)),),
        gaps=(DOWN_ACROSS,),
        verdict=Verdict.CONFIRMED_LATE,
    ),
    Case("controller down across it, device silent", gaps=(DOWN_ACROSS,), verdict=Verdict.MISSED),
    Case(
        "controller down across it, device offline too",
        presence=(status(m(-60), False),),
        gaps=(DOWN_ACROSS,),
        verdict=Verdict.MISSED,
    ),
    Case(
        "controller down over its start only",
        gaps=(Gap(m(-10), m(60)),),
        verdict=Verdict.UNCONFIRMED,
    ),
    Case(
        "controller down over its end only",
        gaps=(Gap(m(60), m(200)),),
        verdict=Verdict.UNCONFIRMED,
    ),
    Case(
        "another step of the device: not this window's",
        steps=(step(m(1), at=END, state=LightState(on=False)),),
        verdict=Verdict.UNCONFIRMED,
    ),
    Case("the start applied in another look", steps=(step(m(1), state=RED),)),
    Case(
        "a later plan version's report of the same step counts",
        steps=(step(m(1), version=7),),
        verdict=Verdict.CONFIRMED,
    ),
    Case(
        "the first report decides: in time",
        steps=(step(m(200)), step(m(1), version=2)),
        verdict=Verdict.CONFIRMED,
    ),
    Case("offline when it began", presence=(status(m(-60), False),), verdict=Verdict.OFFLINE),
    Case(
        "offline, then back before the grace ran out",
        presence=(status(m(-60), False), status(m(0.2), True)),
        verdict=Verdict.UNCONFIRMED,
    ),
    Case(
        "online when it began, offline after the grace",
        presence=(status(m(-60), True), status(m(5), False)),
        verdict=Verdict.UNCONFIRMED,
    ),
    Case(
        "offline, but it confirmed anyway",
        steps=(step(m(3)),),
        presence=(status(m(-60), False),),
        verdict=Verdict.CONFIRMED,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_classify(case: Case) -> None:
    judged = classify(WINDOW, case.steps, case.presence, case.gaps, GRACE)
    assert judged.verdict is case.verdict
    if case.verdict in (Verdict.CONFIRMED, Verdict.CONFIRMED_LATE):
        assert judged.evidence is not None
        assert judged.evidence.received_at == min(
            e.received_at for e in case.steps if e.step_at == START
        )
    else:
        assert judged.evidence is None


def test_a_window_shorter_than_the_grace_is_in_time_until_the_grace_ends() -> None:
    short = Window("s", "c", START, START, START + timedelta(seconds=10), BLUE)
    assert classify(short, (step(START + timedelta(seconds=25)),), (), (), GRACE).verdict is (
        Verdict.CONFIRMED
    )
    assert classify(short, (step(START + timedelta(seconds=31)),), (), (), GRACE).verdict is (
        Verdict.CONFIRMED_LATE
    )
    assert not settled(short, START + timedelta(seconds=20), GRACE)
    assert settled(short, START + timedelta(seconds=30), GRACE)


def seg(start: datetime, end: datetime, light: Light, campaign: str = "blue-heart") -> Segment:
    return Segment("menin-gate", campaign, start, end, light)


def test_windows_are_the_lit_segments_and_a_touching_same_look_run_opens_once() -> None:
    blue = Light(on=True, color="#009EDB", level=80)
    red = Light(on=True, color="#C8102E", level=80)
    off = Light(on=False)
    segments = [
        seg(m(0), m(60), blue),
        seg(m(60), m(120), blue, "other"),  # touching, same look: opened at m(0)
        seg(m(120), m(150), red, "other"),  # another look: a step of its own
        seg(m(150), m(160), off, "all-off"),
        seg(m(170), m(180), blue),  # after a gap: a step of its own
    ]
    got = [
        (w.campaign_id, w.opened_at, w.starts_at, w.ends_at) for w in site_windows("s", segments)
    ]
    assert got == [
        ("blue-heart", m(0), m(0), m(60)),
        ("other", m(0), m(60), m(120)),
        ("other", m(120), m(120), m(150)),
        ("blue-heart", m(170), m(170), m(180)),
    ]


def run(i: int, start: float, alive: float, stopped: float | None = None) -> ControllerRun:
    return ControllerRun(i, m(start), m(alive), m(stopped) if stopped is not None else None)


@pytest.mark.parametrize(
    ("runs", "current", "gaps"),
    [
        ([], None, []),
        ([run(1, 0, 10)], 1, []),  # the current run covers up to now
        ([run(1, 0, 10, 10), run(2, 30, 30)], 2, [(10, 30)]),  # a clean stop
        ([run(1, 0, 8), run(2, 30, 30)], 2, [(8, 30)]),  # a crash: its last beat
        ([run(1, 0, 50), run(2, 30, 60)], 2, []),  # overlapping runs (two processes)
        ([run(1, 0, 5, 5), run(2, 10, 12, 12), run(3, 20, 20)], 3, [(5, 10), (12, 20)]),
        ([run(1, 0, 5, 5)], None, []),  # nothing known after the last run
    ],
)
def test_down_periods(
    runs: list[ControllerRun], current: int | None, gaps: list[tuple[float, float]]
) -> None:
    assert down_periods(runs, m(100), current) == [Gap(m(a), m(b)) for a, b in gaps]


def test_worst_orders_the_verdicts() -> None:
    assert worst([Verdict.CONFIRMED, Verdict.MISSED, Verdict.CONFIRMED_LATE]) is Verdict.MISSED
    assert worst([Verdict.OFFLINE, Verdict.UNCONFIRMED]) is Verdict.UNCONFIRMED
    assert worst([Verdict.CONFIRMED, Verdict.CONFIRMED_LATE]) is Verdict.CONFIRMED_LATE
    assert worst([]) is None
