"""What became of each window: the pure rules of the record. No I/O, no clock.

A *window* is a lit segment of a site's timeline, of one campaign. The step that opened
it is the start of the run of touching segments with the same look (plans carry one
step for such a run), so that is the step a device must have confirmed, as for the
public `lit` state.

`classify` judges one window at one device from three inputs: the step events of the
device (what it reported applying, and when the report reached the controller), its
status events (online/offline), and the controller's down periods:

- `confirmed`: a report of the opening step with the window's look reached the
  controller by the window's end (or the end of the grace, for a window shorter than it);
- `confirmed_late`: such a report exists, but reached the controller later;
- `missed`: no such report, and the window began and ended while the controller was down;
- `offline`: no such report, and the device's last status by the end of the grace said
  offline;
- `unconfirmed`: no such report otherwise.

Any plan version counts: the device lit the window whichever version told it to. A
report of a later step does not stand in for the opening one here (it does for the
reconciler's "is the step in force confirmed"): it shows the device moved on, not that
it lit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from controller.plansteps import wire_light
from controller.store.history import ControllerRun, DeviceEvent, EventKind, Verdict
from devices.protocol import LightState
from schedules.resolve import Segment


@dataclass(frozen=True)
class Window:
    site_id: str
    campaign_id: str
    opened_at: datetime
    """The plan step that opened it: its own start, or that of the run it continues."""
    starts_at: datetime
    ends_at: datetime
    light: LightState


@dataclass(frozen=True)
class Gap:
    """A time no controller run covers: the controller was down."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    evidence: DeviceEvent | None = None
    """The first report of the opening step, when there is one."""


def site_windows(site_id: str, segments: Sequence[Segment]) -> list[Window]:
    """The lit windows of a site's segments (sorted, never overlapping), in order."""
    out: list[Window] = []
    opened: datetime | None = None
    previous: tuple[datetime, LightState] | None = None
    for seg in segments:
        light = wire_light(seg.light)
        if not light.on:
            previous = None
            continue
        if previous is None or previous[0] != seg.start or previous[1] != light:
            opened = seg.start
        assert opened is not None
        out.append(Window(site_id, seg.campaign, opened, seg.start, seg.end, light))
        previous = (seg.end, light)
    return out


def down_periods(
    runs: Sequence[ControllerRun], now: datetime, current: int | None = None
) -> list[Gap]:
    """The gaps between controller runs, oldest first. A run covers its start to its
    clean stop, or to its last heartbeat when it stopped without one (a crash); the run
    `current` (this process) covers up to `now`. Before the first run and after the last
    one nothing is known, and no gap is made up for either."""
    spans = sorted(
        (
            run.started_at,
            now if run.id == current else (run.stopped_at or run.alive_at),
        )
        for run in runs
    )
    gaps: list[Gap] = []
    covered: datetime | None = None
    for start, end in spans:
        if covered is not None and start > covered:
            gaps.append(Gap(covered, start))
        covered = end if covered is None else max(covered, end)
    return gaps


def settled(window: Window, now: datetime, grace: timedelta) -> bool:
    """A window is judged once it has ended and its grace has run out."""
    return now >= window.ends_at and now >= window.starts_at + grace


def _look(state: dict[str, object] | None) -> LightState | None:
    if state is None:
        return None
    try:
        return LightState.model_validate(state)
    except ValidationError:
        return None


def evidence_for(window: Window, steps: Sequence[DeviceEvent]) -> DeviceEvent | None:
    """The first report (by received time) of the window's opening step, with its look."""
    found: DeviceEvent | None = None
    for event in steps:
        if event.kind is not EventKind.STEP or event.step_at != window.opened_at:
            continue
        look = _look(event.state)
        if look is None or not look.matches(window.light):
            continue
        if found is None or event.received_at < found.received_at:
            found = event
    return found


def classify(
    window: Window,
    steps: Sequence[DeviceEvent],
    presence: Sequence[DeviceEvent],
    gaps: Sequence[Gap],
    grace: timedelta,
) -> Judgement:
    """The verdict on one settled window at one device (see the module's list)."""
    evidence = evidence_for(window, steps)
    if evidence is not None:
        in_time = max(window.ends_at, window.starts_at + grace)
        late = evidence.received_at > in_time
        return Judgement(Verdict.CONFIRMED_LATE if late else Verdict.CONFIRMED, evidence)
    if any(g.start <= window.starts_at and window.ends_at <= g.end for g in gaps):
        return Judgement(Verdict.MISSED)
    due = window.starts_at + grace
    last = None
    for event in presence:
        if (
            event.kind in (EventKind.ONLINE, EventKind.OFFLINE)
            and event.received_at <= due
            and (last is None or event.received_at >= last.received_at)
        ):
            last = event
    if last is not None and last.kind is EventKind.OFFLINE:
        return Judgement(Verdict.OFFLINE)
    return Judgement(Verdict.UNCONFIRMED)


SEVERITY = (
    Verdict.UNCONFIRMED,
    Verdict.OFFLINE,
    Verdict.MISSED,
    Verdict.CONFIRMED_LATE,
    Verdict.CONFIRMED,
)
"""Worst first: a site's verdict on a window is the worst of its devices'."""


def worst(verdicts: Sequence[Verdict]) -> Verdict | None:
    return min(verdicts, key=SEVERITY.index, default=None)
