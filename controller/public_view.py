"""The public status, rendered once per change and served as a lookup.

`PublicView` holds, for every language, the encoded JSON document, a gzip copy and the
ETag. Requests only read the current rendering (`get`); they never compute. The view is
rebuilt off the request path, by one builder at a time (the refresher thread that
`start` runs, or a caller of `refresh`):

- after `invalidate()` (the controller calls it after every intake batch, reconcile, or
  registry or campaign change), at most once per `min_interval_s`;
- when time alone changes a site's state: the view knows the next such instant (a
  window enters the upcoming horizon, starts, passes its grace period, or ends) and is
  stale from then on;
- at least every `max_age_s` when given, for changes made where no `invalidate()` is
  called (another process).

After each build that gave a new rendering, the listeners (`subscribe`) are called:
the public event stream (`controller/web/events_route.py`) wakes its clients so.

A rebuild re-expands a site's timeline only when its campaigns, the site or the date
range changed: timelines are cached per (site, campaigns fingerprint, range), and the
cache keeps only what the last build used.

Across restarts (`last_known`, `controller/last_known.py`): every build that changes a
rendering saves them all, and `stop` saves them once more with the time it stopped. At
the next start the saved documents are served at once, marked as the last-known copy
(`Rendering.as_of`), until the first build. When `hold` is given, that first build
waits while `hold()` says the controller has not heard from the devices yet (the
broker link is not up, or what it brought is not stored), for at most `hold_s`: a
document built earlier would show the state as it was before the restart, under a
fresh `generated_at`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.last_known import LastKnown, Saved, Stored
from controller.plans import PlanCache
from controller.public import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    Assessment,
    Fragments,
    Renderer,
    SiteMemo,
    assess,
    runs_range,
    site_runs,
)
from controller.store.base import Command, Snapshot
from devices.clock import TimeSource
from devices.protocol import Plan
from schedules.model import Campaign, City, Site
from schedules.resolve import Segment

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0
RANGE_STEP = timedelta(hours=6)
"""Timelines are expanded over a range that moves in these steps, so the same expansion
serves every rebuild until `now` crosses into the next step."""
GZIP_LEVEL = 6
KEEP_SAME = timedelta(seconds=10)
"""A rebuild that gives the same document as one rendered less than this ago keeps that
one (a flood of reports that change nothing public costs no compression); older, it is
rendered again, so `generated_at` says the state was looked at recently."""
IDLE_WAIT_S = 5.0
"""The refresher looks at the wall clock at least this often (it may be set)."""
HOLD_POLL_S = 0.2
"""While the first build is held, how often the refresher asks `hold` again."""
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rendering:
    """One language's document: the bytes to send, gzipped or not, and its ETag."""

    body: bytes
    gzip: bytes
    etag: str
    generated_at: datetime
    as_of: datetime | None = None
    """Set on the last-known copy served after a restart (before the first build): the
    last time the controller that rendered it knew it to be current."""


def last_known_etag(etag: str) -> str:
    """The ETag of a document served as the last-known copy: not the live one's, so a
    client holding the live document gets the copy (and learns it is one), not a 304."""
    inner = etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else etag
    return f'"{inner}-last-known"'


def restored(saved: Saved, languages: Collection[str]) -> dict[str, Rendering]:
    """The saved documents, as renderings marked last-known (offered languages only)."""
    return {
        lang: Rendering(
            body=stored.body,
            gzip=gzip.compress(stored.body, compresslevel=GZIP_LEVEL, mtime=0),
            etag=last_known_etag(stored.etag),
            generated_at=stored.generated_at,
            as_of=saved.as_of,
        )
        for lang, stored in saved.documents.items()
        if lang in languages
    }


def campaigns_fingerprint(campaigns: Sequence[Campaign]) -> str:
    """Changes whenever any campaign, or their order, changes."""
    digest = hashlib.sha256()
    for campaign in campaigns:
        digest.update(campaign.model_dump_json().encode())
        digest.update(b"\0")
    return digest.hexdigest()


_TimelineKey = tuple[str, str, float, float, tuple[str, ...], str, str, datetime]


class TimelineCache:
    """Lit runs per (site, campaigns fingerprint, range). Bounded: after each build
    (`begin` ... `end`) it keeps only the entries that build used, one per site."""

    def __init__(self, upcoming: timedelta, step: timedelta = RANGE_STEP) -> None:
        self.upcoming = upcoming
        self.step = step
        self.expansions = 0
        self._entries: dict[_TimelineKey, tuple[Segment, ...]] = {}
        self._used: dict[_TimelineKey, tuple[Segment, ...]] = {}

    def range_start(self, now: datetime) -> datetime:
        return _EPOCH + self.step * ((now - _EPOCH) // self.step)

    def range_end(self, now: datetime) -> datetime:
        """When `now` leaves the current range: the next build expands afresh."""
        return self.range_start(now) + self.step

    def begin(self) -> None:
        self._used = {}

    def end(self) -> None:
        self._entries, self._used = self._used, {}

    def __len__(self) -> int:
        return len(self._entries)

    def runs(
        self,
        campaigns: Sequence[Campaign],
        fingerprint: str,
        site: Site,
        city: City,
        now: datetime,
    ) -> tuple[Segment, ...]:
        base = self.range_start(now)
        key: _TimelineKey = (
            site.id,
            site.city,
            site.lat,
            site.lon,
            site.tags,
            city.timezone,
            fingerprint,
            base,
        )
        found = self._used.get(key)
        if found is None:
            found = self._entries.get(key)
        if found is None:
            start = runs_range(base, self.upcoming)[0]
            end = runs_range(base + self.step, self.upcoming)[1]
            found = site_runs(campaigns, site, city, start, end)
            self.expansions += 1
        self._used[key] = found
        return found


class BuildPlans:
    """The plans one build reads, from the shared cache; a plan that does not decode is
    logged once per build and read as None (not lit)."""

    def __init__(self, plans: PlanCache) -> None:
        self.plans = plans
        self._bad: set[int] = set()
        self._bad_seen: set[int] = set()

    def begin(self) -> None:
        self._bad_seen = set()

    def end(self) -> None:
        self._bad = self._bad_seen

    def __call__(self, command: Command) -> Plan | None:
        try:
            return self.plans(command)
        except ValueError:
            if command.id not in self._bad:
                log.warning(
                    "device %s: plan version %d does not decode; not lit",
                    command.device_id,
                    command.version,
                )
            self._bad_seen.add(command.id)
            return None


class PublicView:
    """Every language's public status, rendered once per change (see the module)."""

    def __init__(
        self,
        load: Callable[[], Snapshot],
        clock: TimeSource,
        *,
        grace: timedelta,
        upcoming: timedelta,
        min_interval_s: float = MIN_INTERVAL_S,
        max_age_s: float | None = None,
        languages: Collection[str] = LANGUAGES,
        default_language: str = DEFAULT_LANGUAGE,
        plans: PlanCache | None = None,
        last_known: LastKnown | None = None,
        hold: Callable[[], bool] | None = None,
        hold_s: float = 0.0,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError("min_interval_s must not be negative")
        if max_age_s is not None and max_age_s < min_interval_s:
            raise ValueError("max_age_s must be at least min_interval_s")
        if default_language not in languages:
            raise ValueError(f"the default language {default_language!r} is not offered")
        self.load = load
        self.clock = clock
        self.grace = grace
        self.upcoming = upcoming
        self.min_interval_s = min_interval_s
        self.max_age_s = max_age_s
        self.languages = frozenset(languages)
        self.default_language = default_language
        self.builds = 0
        """Renderings made so far."""
        self.failures = 0
        """Builds that failed (the previous rendering stays served)."""
        self.timelines = TimelineCache(upcoming)
        self._plans = BuildPlans(plans if plans is not None else PlanCache())
        self._memo = SiteMemo()
        self._fragments = Fragments()
        self._renderings: dict[str, Rendering] = {}
        self.last_known = last_known
        self.hold = hold
        self.hold_s = hold_s
        self._hold_until: float | None = None
        self.saves_failed = 0
        """Saves of the last-known copy that failed (logged; serving goes on)."""
        if last_known is not None:
            saved = last_known.load()
            if saved is not None:
                copy = restored(saved, self.languages)
                if default_language in copy:
                    self._renderings = copy
                    self._hold_until = clock.monotonic() + hold_s
        self._stale = True
        self._attempted: float | None = None  # monotonic time of the last build attempt
        self._built: float | None = None  # monotonic time of the last successful build
        self._cost = 0.0  # how long the last successful build took (monotonic seconds)
        self._next_change: datetime | None = None
        self._building = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []

    # ---- requests ---------------------------------------------------------------

    def language(self, lang: str | None) -> str:
        """`lang` when it is offered, else the default language."""
        return lang if lang in self.languages else self.default_language

    def get(self, lang: str | None = None) -> Rendering | None:
        """The current rendering in `lang`, or None before the first build."""
        return self._renderings.get(self.language(lang))

    @property
    def ready(self) -> bool:
        return bool(self._renderings)

    @property
    def live(self) -> bool:
        """Built by this process (not only the last-known copy from before a start)."""
        return self._built is not None

    def _held(self) -> bool:
        """Is the first build waiting (see the module)?"""
        if self._hold_until is None or self._built is not None or self.hold is None:
            return False
        if self.clock.monotonic() >= self._hold_until:
            return False
        try:
            return self.hold()
        except Exception:
            log.exception("public status: the hold check failed; building")
            return False

    # ---- changes --------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every build that gave a new rendering (on the
        builder's thread: it must return at once and never raise)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("public status: a listener failed")

    def invalidate(self) -> None:
        """Something the status reads changed: rebuild soon (within `min_interval_s`)."""
        self._stale = True
        self._wake.set()

    @property
    def next_change(self) -> datetime | None:
        """When time alone next changes a site's state (or the timeline range moves)."""
        return self._next_change

    def due(self) -> bool:
        """Should the view be rebuilt now?"""
        return self._wait_s() <= 0

    def _wait_s(self) -> float:
        """Seconds until the view is due (0 when due now)."""
        if self._held():
            return HOLD_POLL_S
        if self._attempted is None:
            return 0.0
        since = self.clock.monotonic() - self._attempted
        # at least the interval, and twice the last build's cost: a large view under a
        # stream of changes takes at most a third of a core
        pause = max(0.0, max(self.min_interval_s, 2 * self._cost) - since)
        if self._stale or self._built is None:
            return pause  # stale, or the last attempt failed: try again after the pause
        wait = math.inf if self.max_age_s is None else self.max_age_s - since
        if self._next_change is not None:
            wait = min(wait, (self._next_change - self.clock()).total_seconds())
        return max(pause, wait)

    def refresh(self) -> bool:
        """Rebuild if due and no other build is running; True when it rebuilt."""
        if not self.due():
            return False
        return self._build(blocking=False)

    def rebuild(self) -> bool:
        """Rebuild now, whatever the interval (waits for a running build)."""
        return self._build(blocking=True)

    def _build(self, blocking: bool) -> bool:
        if not self._building.acquire(blocking=blocking):
            return False
        try:
            self._stale = False  # an invalidate() from now on asks for the next build
            self._attempted = started = self.clock.monotonic()
            try:
                renderings, next_change = self._render()
            except Exception:
                self._stale = True
                self.failures += 1
                log.exception("could not build the public status; serving the previous one")
                return False
            changed = any(
                self._renderings.get(lang) is not rendering
                for lang, rendering in renderings.items()
            )
            self._renderings = renderings
            self._next_change = next_change
            ended = self.clock.monotonic()
            self._cost = ended - started
            self._attempted = self._built = ended  # the pause runs from the build's end
            self.builds += 1
            if changed:
                self._save(self.clock())
                self._changed()
            return True
        finally:
            self._building.release()

    def _save(self, as_of: datetime) -> None:
        """Keep the live renderings as the last-known copy, current as of `as_of`."""
        if self.last_known is None or self._built is None:
            return  # only what this process built: a restored copy keeps its own as_of
        documents = {
            lang: Stored(r.body, r.etag, r.generated_at) for lang, r in self._renderings.items()
        }
        try:
            self.last_known.save(Saved(as_of=as_of, documents=documents))
        except OSError as exc:
            self.saves_failed += 1
            log.warning("could not save the last-known public status: %s", exc)

    def _render(self) -> tuple[dict[str, Rendering], datetime | None]:
        now = self.clock()
        snap = self.load()
        fingerprint = campaigns_fingerprint(snap.campaigns)
        campaigns = snap.campaigns

        held_prints: dict[int, str] = {}

        def runs_of(site: Site, city: City) -> tuple[Segment, ...]:
            held = snap.held.get(site.id)
            if held is None:
                return self.timelines.runs(campaigns, fingerprint, site, city, now)
            # a site a staged rollout holds: the campaigns its devices still run
            printed = held_prints.get(id(held))
            if printed is None:
                printed = held_prints[id(held)] = campaigns_fingerprint(held)
            return self.timelines.runs(held, printed, site, city, now)

        self.timelines.begin()
        self._plans.begin()
        self._memo.begin()
        try:
            assessment: Assessment = assess(
                snap, now, self.grace, self.upcoming, runs_of, self._plans, self._memo
            )
        finally:
            self.timelines.end()
            self._plans.end()
            self._memo.end()
        self._fragments.keep({site.id for site, _, _ in assessment.sites})
        renderer = Renderer(assessment, self._fragments)
        renderings: dict[str, Rendering] = {}
        for lang in sorted(self.languages):
            sites = renderer.sites(lang)
            previous = self._renderings.get(lang)
            if (
                previous is not None
                and previous.as_of is None
                and previous.etag == renderer.etag(sites)
                and now - previous.generated_at < KEEP_SAME
            ):
                # the same document, made a moment ago: keep it (no compression again)
                renderings[lang] = previous
                continue
            document = renderer.document(sites)
            renderings[lang] = Rendering(
                body=document.body,
                gzip=gzip.compress(document.body, compresslevel=GZIP_LEVEL, mtime=0),
                etag=document.etag,
                generated_at=now,
            )
        moves = self.timelines.range_end(now)
        changes = assessment.next_change
        return renderings, moves if changes is None else min(changes, moves)

    # ---- the refresher ------------------------------------------------------------

    def start(self) -> None:
        """Build in a background thread: now, then whenever due, until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="public-view", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the refresher; the live renderings are saved as current until now."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        with self._building:
            self._save(self.clock())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.refresh()
                wait = self._wait_s()
            except Exception:  # the refresher never dies; a broken build is logged above
                log.exception("public status refresher")
                wait = max(self.min_interval_s, 0.1)
            if wait > 0:
                self._wake.wait(min(wait, IDLE_WAIT_S))
