"""Expanded timelines per site, cached: the expensive part of planning (sun times,
recurrences, priorities) is done once per site, campaigns revision and day.

A request for [start, end) is answered from an expansion of a wider, day-aligned range
that contains it, so every call within the same day hits the cache; segments outside the
asked range are real ones, which `plan_steps` and the public view handle as such.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schedules.model import Campaign, Site
from schedules.resolve import Segment, timeline

BUCKET = timedelta(days=1)
MAX_ENTRIES = 50_000
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class Timelines:
    def __init__(self, bucket: timedelta = BUCKET, max_entries: int = MAX_ENTRIES) -> None:
        self.bucket = bucket
        self.max_entries = max_entries
        self._cache: dict[tuple[datetime, tuple[Hashable, ...]], list[Segment]] = {}
        self._lock = threading.Lock()
        self._newest = _EPOCH
        self.expansions = 0

    def segments(
        self,
        campaigns: Sequence[Campaign],
        revision: Hashable,
        site: Site,
        zone: ZoneInfo,
        start: datetime,
        end: datetime,
    ) -> list[Segment]:
        """The site's segments covering at least [start, end). `revision` must change
        whenever `campaigns` or the site do."""
        n = (start - _EPOCH) // self.bucket
        lo = _EPOCH + n * self.bucket
        span = -((lo - end) // self.bucket) + 1  # buckets to reach end, and one more
        key = (lo, (site.id, site.lat, site.lon, str(zone), revision, span))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = timeline(campaigns, site, zone, lo, lo + span * self.bucket)
        with self._lock:
            if lo > self._newest or len(self._cache) >= self.max_entries:
                # a new day: yesterday's expansions are done with (and a full cache is
                # started afresh rather than grown)
                self._newest = max(self._newest, lo)
                self._cache = {k: v for k, v in self._cache.items() if k[0] >= lo}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[key] = found
            self.expansions += 1
        return found

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
