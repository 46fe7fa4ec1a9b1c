"""The public status: which monuments are lit, as their devices confirmed.

Built from an allow-list of fields. It never carries device ids, topics, credentials,
addresses, firmware or raw errors. A site is `lit` only when every device at the site
confirmed (`controller.confirmation.confirmed_at`) the step of its newest plan that
opened the current window, with the window's output.

The pieces here are pure and shared by `public_status` (one document, computed on the
spot) and `controller.public_view.PublicView` (every language rendered once per change),
so both produce the same bytes and the same ETag.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from controller import confirmation
from controller.confirmation import ConfirmedBy
from controller.i18n import catalogue_languages
from controller.store.base import Command, DeviceView, Snapshot
from devices.protocol import Instant, Plan, format_instant
from schedules.model import Campaign, City, Site, display_name
from schedules.resolve import LOOKAROUND, Segment, timeline

LANGUAGES = frozenset(catalogue_languages()) or frozenset({"en"})
"""Every language with a catalogue of the public page (`controller.i18n`)."""
DEFAULT_LANGUAGE = "en"


class PublicState(StrEnum):
    SCHEDULED = "scheduled"
    PENDING = "pending"
    LIT = "lit"
    UNCONFIRMED = "unconfirmed"
    OFFLINE = "offline"
    OFF = "off"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublicWindow(_Out):
    start: Instant
    end: Instant


class PublicSite(_Out):
    id: str
    name: str
    city: str
    lat: float
    lon: float
    state: PublicState
    color: str | None = None
    confirmed_at: Instant | None = None
    confirmed_by: ConfirmedBy | None = None
    """For a lit site: how its devices confirmed it (the weakest of them): `echo` (the
    device repeats what it set), `readback` (it re-read its output) or `sensor` (a light
    sensor at the monument measured it). Absent (null) otherwise."""
    window: PublicWindow | None = None


class Summary(_Out):
    total: int
    lit: int
    pending: int
    unconfirmed: int
    offline: int
    scheduled: int
    off: int


class PublicStatus(_Out):
    generated_at: Instant
    summary: Summary
    sites: list[PublicSite]

    def etag(self) -> str:
        """Changes exactly when something other than generated_at changes."""
        body = self.model_dump(mode="json", exclude_none=True)
        return etag_of(dumps(body["summary"]), dumps(body["sites"]))


# ---- one site's state -------------------------------------------------------------


@dataclass(frozen=True)
class SiteState:
    """A site's public state, before names are put in a language."""

    state: PublicState
    window: Segment | None = None
    color: str | None = None
    confirmed_at: datetime | None = None
    confirmed_by: ConfirmedBy | None = None


PlanOf = Callable[[Command], Plan | None]


def plan_of(command: Command) -> Plan | None:
    """The command's plan, or None when its payload does not decode."""
    try:
        return command.plan
    except ValueError:
        return None


def lit_runs(segments: Iterable[Segment]) -> tuple[Segment, ...]:
    """The lit runs of a timeline. Touching segments with the same look are joined, as a
    device's plan does: one step starts the run, whichever campaigns the pieces belong
    to (the first names it)."""
    out: list[Segment] = []
    for seg in segments:
        last = out[-1] if out else None
        if last is not None and last.end == seg.start and last.light == seg.light:
            out[-1] = Segment(last.site, last.campaign, last.start, seg.end, last.light)
        else:
            out.append(seg)
    return tuple(seg for seg in out if seg.light.on)


def site_runs(
    campaigns: Sequence[Campaign], site: Site, city: City, start: datetime, end: datetime
) -> tuple[Segment, ...]:
    """The lit runs of `site` over [start, end)."""
    return lit_runs(timeline(campaigns, site, city.zone, start, end))


def runs_range(now: datetime, upcoming: timedelta) -> tuple[datetime, datetime]:
    """The range of timeline a status at `now` needs: past the limit, so an upcoming
    window shows its true end, and far enough back to see the current one whole."""
    return now - LOOKAROUND, now + upcoming + LOOKAROUND


def device_confirmation(
    device: DeviceView, command: Command | None, plan: Plan | None, run: Segment, now: datetime
) -> tuple[datetime, ConfirmedBy] | None:
    """When and how the device confirmed the window `run`, or None.

    The step of its newest plan in force at `now` must be lit, start at the window's
    start and show the window's output, and the device must have confirmed that step
    of that version: an apply report of an older version confirms nothing.
    """
    if command is None or plan is None or plan.test:
        return None  # a test flash (controller/flash.py) never confirms a window
    step = plan.step_at(now)
    if step is None or step.at != run.start:
        return None
    shows = step.state
    if not (shows.on and (shows.color, shows.level) == (run.light.color, run.light.level)):
        return None  # the plan is not the window's (both colours are upper case)
    return confirmation.device_confirmation(device, command.version, step)


def device_confirmed_at(
    device: DeviceView, command: Command | None, plan: Plan | None, run: Segment, now: datetime
) -> datetime | None:
    """When the device confirmed the window `run`, or None (`device_confirmation`)."""
    found = device_confirmation(device, command, plan, run, now)
    return found[0] if found is not None else None


def _refuted(device: DeviceView, command: Command | None, plan: Plan | None, now: datetime) -> bool:
    """Did the device's light sensor refute the step of its newest plan in force now?"""
    if command is None or plan is None:
        return False
    step = plan.step_at(now)
    return step is not None and confirmation.refuted(device, command.version, step.at)


def _graced(run: Segment, plan: Plan | None, grace: timedelta) -> datetime:
    """When a device's grace to confirm the open window `run` ends: from the window's
    start, or from its plan's issue when that came later (a plan sent mid-window, after
    a test, a retry or an edit, has a grace of its own, as the lifecycle gives it)."""
    if plan is None or plan.issued_at <= run.start:
        return run.start + grace
    return plan.issued_at + grace


def _plan_graces(plans: Iterable[Plan | None], now: datetime, grace: timedelta) -> datetime | None:
    """The first end of a plan's own grace after `now` (a state may change then)."""
    found = None
    for plan in plans:
        if plan is not None and plan.issued_at + grace > now:
            at = plan.issued_at + grace
            if found is None or at < found:
                found = at
    return found


def _open_state(
    devices: Sequence[DeviceView],
    latest: Mapping[str, Command],
    plans: PlanOf,
    run: Segment,
    now: datetime,
    grace: timedelta,
) -> SiteState:
    late = now >= run.start + grace
    waiting = PublicState.UNCONFIRMED if late else PublicState.PENDING
    if not devices:
        return SiteState(waiting, window=run)
    offline = False
    unconfirmed = False
    waiting_for = False
    times: list[datetime] = []
    strengths: list[ConfirmedBy] = []
    for device in devices:
        if device.online is not True:
            offline = True
            continue
        command = latest.get(device.id)
        plan = plans(command) if command is not None else None
        found = device_confirmation(device, command, plan, run, now)
        if found is not None:
            times.append(found[0])
            strengths.append(found[1])
        elif _refuted(device, command, plan, now):
            unconfirmed = True  # its light sensor saw something else: no grace to wait
        elif plan is not None and plan.test:
            waiting_for = True  # a test: back on its real plan in a few seconds
        elif now < _graced(run, plan, grace):
            waiting_for = True  # its plan came after the window opened: its own grace
        else:
            unconfirmed = True
    if not offline and not unconfirmed and not waiting_for:
        return SiteState(
            PublicState.LIT,
            window=run,
            color=run.light.color,
            confirmed_at=max(times),
            confirmed_by=confirmation.weakest(strengths),
        )
    if unconfirmed:
        return SiteState(PublicState.UNCONFIRMED, window=run)
    if offline:
        return SiteState(PublicState.OFFLINE, window=run)
    return SiteState(PublicState.PENDING, window=run)


def site_state(
    runs: Sequence[Segment],
    devices: Sequence[DeviceView],
    latest: Mapping[str, Command],
    now: datetime,
    grace: timedelta,
    upcoming: timedelta,
    plans: PlanOf = plan_of,
) -> SiteState:
    """The public state of a site with these lit runs and these devices."""
    for run in runs:
        if run.contains(now):
            return _open_state(devices, latest, plans, run, now, grace)
        if run.start > now:
            if run.start <= now + upcoming:
                return SiteState(PublicState.SCHEDULED, window=run)
            break
    return SiteState(PublicState.OFF)


def next_change(
    runs: Sequence[Segment], now: datetime, grace: timedelta, upcoming: timedelta
) -> datetime | None:
    """The first instant after `now` at which time alone may change the site's state: a
    window enters the upcoming horizon, starts, passes its grace period, or ends."""
    found: datetime | None = None
    for run in runs:
        if run.end <= now:
            continue
        for at in (run.start - upcoming, run.start, run.start + grace, run.end):
            if at > now and (found is None or at < found):
                found = at
        if run.start - upcoming > now:
            break  # later runs change nothing before this one does
    return found


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


# ---- every site ---------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    """Every site's state at `now`, and when time alone may next change one."""

    now: datetime
    sites: tuple[tuple[Site, City, SiteState], ...]
    next_change: datetime | None


RunsOf = Callable[[Site, City], tuple[Segment, ...]]


@dataclass(frozen=True, eq=False)
class _Assessed:
    runs: Sequence[Segment]
    devices: tuple[DeviceView, ...]
    commands: tuple[Command | None, ...]
    at: datetime
    due: datetime | None
    state: SiteState
    change: datetime | None


class SiteMemo:
    """Each site's last assessment, and what it rested on: a site whose runs, devices and
    commands did not move, and whose next instant (a window's edge or grace, a step of a
    device's plan) has not come, keeps its state, the same object. Kept from one build
    (`begin` ... `end`) to the next, for the sites that build assessed."""

    def __init__(self) -> None:
        self._entries: dict[str, _Assessed] = {}
        self._used: dict[str, _Assessed] = {}
        self.hits = 0

    def begin(self) -> None:
        self._used = {}

    def end(self) -> None:
        self._entries, self._used = self._used, {}

    def assess(
        self,
        site: Site,
        runs: Sequence[Segment],
        devices: Sequence[DeviceView],
        latest: Mapping[str, Command],
        now: datetime,
        grace: timedelta,
        upcoming: timedelta,
        plans: PlanOf,
    ) -> tuple[SiteState, datetime | None]:
        mine = tuple(devices)
        commands = tuple(latest.get(d.id) for d in mine)
        known = self._entries.get(site.id)
        if (
            known is not None
            and known.runs is runs
            and known.at <= now
            and (known.due is None or now < known.due)
            and known.commands == commands
            and known.devices == mine
        ):
            self.hits += 1
            self._used[site.id] = known
            return known.state, known.change
        state = site_state(runs, mine, latest, now, grace, upcoming, plans)
        change = _earliest(
            next_change(runs, now, grace, upcoming),
            _plan_graces((plans(c) if c is not None else None for c in commands), now, grace),
        )
        due = change
        for command in commands:
            plan = plans(command) if command is not None else None
            for step in plan.steps if plan is not None else ():
                if step.at > now:
                    if due is None or step.at < due:
                        due = step.at
                    break
        self._used[site.id] = _Assessed(runs, mine, commands, now, due, state, change)
        return state, change


def assess(
    snap: Snapshot,
    now: datetime,
    grace: timedelta,
    upcoming: timedelta,
    runs_of: RunsOf,
    plans: PlanOf = plan_of,
    memo: SiteMemo | None = None,
) -> Assessment:
    """The state of every site of the catalog, in catalog order. Devices are indexed by
    site once, so the cost grows with sites plus devices, never their product."""
    by_site: dict[str, list[DeviceView]] = defaultdict(list)
    for device in snap.devices:
        by_site[device.site_id].append(device)
    cities = {city.id: city for city in snap.catalog.cities}
    out: list[tuple[Site, City, SiteState]] = []
    soonest: datetime | None = None
    for site in snap.catalog.sites:
        city = cities[site.city]
        runs = runs_of(site, city)
        devices = by_site.get(site.id, ())
        if memo is not None:
            state, at = memo.assess(site, runs, devices, snap.latest, now, grace, upcoming, plans)
        else:
            state = site_state(runs, devices, snap.latest, now, grace, upcoming, plans)
            commands = (snap.latest.get(d.id) for d in devices)
            at = _earliest(
                next_change(runs, now, grace, upcoming),
                _plan_graces((plans(c) if c is not None else None for c in commands), now, grace),
            )
        out.append((site, city, state))
        if at is not None and (soonest is None or at < soonest):
            soonest = at
    return Assessment(now, tuple(out), soonest)


# ---- JSON -----------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_kept(value: Any) -> bytes:
    """`dumps` for a value kept long: orjson hands back its working buffer (about 4 KiB
    even for 200 bytes of JSON), so a kept fragment is copied to its own size. At 10,000
    sites in four languages that is 150 MiB less."""
    return memoryview(orjson.dumps(value)).tobytes()


def etag_of(summary: bytes, sites: bytes) -> str:
    """The ETag of a document: its summary and sites, never its generated_at."""
    digest = hashlib.sha256(summary + b"\n" + sites).hexdigest()
    return f'"{digest[:32]}"'


def summary_json(states: Iterable[SiteState]) -> dict[str, int]:
    """The counts, in the order of `Summary`'s fields."""
    counts = dict.fromkeys(Summary.model_fields, 0)
    for state in states:
        counts[state.state.value] += 1
        counts["total"] += 1
    return counts


def state_json(
    state: SiteState, instant: Callable[[datetime], str] = format_instant
) -> dict[str, Any]:
    """The fields of a site that do not depend on the language, absent ones left out."""
    out: dict[str, Any] = {"state": state.state.value}
    if state.color is not None:
        out["color"] = state.color
    if state.confirmed_at is not None:
        out["confirmed_at"] = instant(state.confirmed_at)
    if state.confirmed_by is not None:
        out["confirmed_by"] = state.confirmed_by.value
    if state.window is not None:
        out["window"] = {"start": instant(state.window.start), "end": instant(state.window.end)}
    return out


def site_json(site: Site, city: City, fixed: dict[str, Any], lang: str) -> dict[str, Any]:
    """One site as the page reads it: the fields of `PublicSite`, in its order. `fixed`
    is the site's `state_json`."""
    return {
        "id": site.id,
        "name": display_name(site.name, lang),
        "city": display_name(city.name, lang),
        "lat": site.lat,
        "lon": site.lon,
        **fixed,
    }


@dataclass(frozen=True)
class Document:
    """One language's status document, encoded, with its ETag."""

    body: bytes
    etag: str


class Fragments:
    """Each site's encoded JSON per language, kept while the site, its city and its
    state are the same objects (a `SiteMemo` hands back the same state when nothing
    moved), so a build encodes only the sites that changed."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[Site, City, SiteState, bytes]] = {}

    def get(self, site: Site, city: City, state: SiteState, lang: str) -> bytes | None:
        known = self._entries.get((site.id, lang))
        if known is not None and known[0] is site and known[1] is city and known[2] is state:
            return known[3]
        return None

    def put(self, site: Site, city: City, state: SiteState, lang: str, data: bytes) -> None:
        self._entries[(site.id, lang)] = (site, city, state, data)

    def keep(self, site_ids: Collection[str]) -> None:
        """Forget the sites no longer in the catalog."""
        self._entries = {k: v for k, v in self._entries.items() if k[0] in site_ids}


class Renderer:
    """Encodes one assessment in any language; what every language shares (the summary,
    each site's state and times) is encoded once."""

    def __init__(self, assessment: Assessment, fragments: Fragments | None = None) -> None:
        self.assessment = assessment
        self.fragments = fragments if fragments is not None else Fragments()
        self.summary = dumps(summary_json(state for _, _, state in assessment.sites))
        self._instant = lru_cache(maxsize=4096)(format_instant)  # windows are shared
        self._generated = format_instant(assessment.now).encode()

    def _site(self, site: Site, city: City, state: SiteState, lang: str) -> bytes:
        data = self.fragments.get(site, city, state, lang)
        if data is None:
            data = dumps_kept(site_json(site, city, state_json(state, self._instant), lang))
            self.fragments.put(site, city, state, lang, data)
        return data

    def sites(self, lang: str) -> bytes:
        """The encoded `sites` array in `lang`."""
        return (
            b"["
            + b",".join(
                self._site(site, city, state, lang) for site, city, state in self.assessment.sites
            )
            + b"]"
        )

    def etag(self, sites: bytes) -> str:
        return etag_of(self.summary, sites)

    def document(self, sites: bytes) -> Document:
        body = b'{"generated_at":"%s","summary":%s,"sites":%s}' % (
            self._generated,
            self.summary,
            sites,
        )
        return Document(body, self.etag(sites))

    def render(self, lang: str) -> Document:
        return self.document(self.sites(lang))


def public_status(
    snap: Snapshot,
    now: datetime,
    grace: timedelta,
    upcoming: timedelta,
    lang: str = DEFAULT_LANGUAGE,
) -> PublicStatus:
    """The status document at `now`, computed on the spot (no cache)."""
    start, end = runs_range(now, upcoming)

    def runs_of(site: Site, city: City) -> tuple[Segment, ...]:
        return site_runs(snap.held.get(site.id, snap.campaigns), site, city, start, end)

    document = Renderer(assess(snap, now, grace, upcoming, runs_of)).render(lang)
    return PublicStatus.model_validate_json(document.body)
