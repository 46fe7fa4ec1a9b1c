"""A city's confirmed state changes as an Atom feed (RFC 4287), from the record.

Entries (`changes`), newest first:

- `lit`: every device of a monument reported applying the same lit step (the record's
  step events, `docs/record.md`); the entry's time is the last device's own time of
  applying it. Its colour is the step's, and how it was confirmed is the weakest of
  the devices' (`confirmed_by`: echo, readback, sensor), as in the public status.
- `off`: likewise, for a step that turns the lights off.
- `unconfirmed`: a window ended and its outcome at the monument (the worst of its
  devices') is `unconfirmed`, `offline` or `missed`: no confirmation of it reached the
  controller. The entry's time is the window's end, when that became known.

A device must report a step only if it was registered before the step (a device
registered later is not held to it); a monument with no such device gets no entry.
Decommissioned devices are not asked for.

Only public fields go in: the monument's id, name, city and place, the state, the
colour and times. Never a device id, topic, address, firmware, error or person.
Ids are stable (`urn:uuid:` from the monument, the kind and the instant), and the
document depends only on the record (no clock reading), so the same record gives the
same bytes.
"""

from __future__ import annotations

import unicodedata
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from controller.confirmation import ConfirmedBy, weakest
from controller.store.history import DeviceEvent, Verdict, WindowRecord
from controller.windows import worst
from schedules.model import City, Site, display_name

ATOM = "http://www.w3.org/2005/Atom"
MAX_ENTRIES = 100
NOTHING_YET = datetime(2000, 1, 1, tzinfo=UTC)
"""The feed's `updated` while it has no entry (a fixed time, so its ETag holds)."""
NOT_CONFIRMED = frozenset({Verdict.UNCONFIRMED, Verdict.OFFLINE, Verdict.MISSED})
HOW = {
    ConfirmedBy.ECHO: "its lighting controller",
    ConfirmedBy.READBACK: "its lighting controller, reading its output back,",
    ConfirmedBy.SENSOR: "a light sensor at the monument",
}
"""Who confirmed a step, by how (the public status's `confirmed_by`)."""
_IDS = uuid.UUID("0b0f5b8e-61a7-4a40-8a8f-5c6b2f1d9e47")


class Change(StrEnum):
    LIT = "lit"
    OFF = "off"
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True)
class Entry:
    site: str
    kind: Change
    at: datetime
    """When it happened (the device's time of applying; a window's end)."""
    key: datetime
    """What makes it unique with site and kind: the step's instant, the window's start."""
    color: str | None = None
    confirmed_by: ConfirmedBy | None = None
    """How the step was confirmed: the weakest of the devices' (as in the status)."""

    @property
    def id(self) -> str:
        stamp = self.key.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"urn:uuid:{uuid.uuid5(_IDS, f'{self.site}/{self.kind.value}/{stamp}')}"


def _look(state: Mapping[str, object] | None) -> tuple[bool, str | None] | None:
    if not state or not isinstance(state.get("on"), bool):
        return None
    on = bool(state["on"])
    color = state.get("color")
    return on, (str(color).upper() if on and isinstance(color, str) else None)


def _how(events: Mapping[str, DeviceEvent], devices: Sequence[str]) -> ConfirmedBy | None:
    """The weakest confirmation of these devices' reports (None if one does not say)."""
    found: list[ConfirmedBy] = []
    for device in devices:
        said = events[device].confirmed_by
        if said not in set(ConfirmedBy):
            return None
        found.append(ConfirmedBy(said))
    return weakest(found)


def step_changes(
    steps: Iterable[DeviceEvent],
    devices_of: Mapping[str, Collection[str]],
    registered: Mapping[str, datetime],
) -> list[Entry]:
    """`lit` and `off` entries: the steps every device of a site that was registered
    before the step reported applying, in the same look."""
    site_of = {d: site for site, ds in devices_of.items() for d in ds}
    # (site, step) -> device -> its first report of that step
    reports: dict[tuple[str, datetime], dict[str, DeviceEvent]] = defaultdict(dict)
    for event in steps:
        site = site_of.get(event.device_id)
        if site is None or event.step_at is None:
            continue
        reports[(site, event.step_at)].setdefault(event.device_id, event)
    out: list[Entry] = []
    for (site, step_at), by_device in reports.items():
        needed = [d for d in devices_of[site] if d in registered and registered[d] <= step_at]
        if not needed or any(d not in by_device for d in needed):
            continue
        looks = {_look(by_device[d].state) for d in needed}
        if len(looks) != 1:
            continue
        look = looks.pop()
        if look is None:
            continue
        on, color = look
        applied = [by_device[d].applied_at or by_device[d].received_at for d in needed]
        kind = Change.LIT if on else Change.OFF
        out.append(Entry(site, kind, max(applied), step_at, color, _how(by_device, needed)))
    return out


def window_changes(outcomes: Iterable[WindowRecord], sites: Collection[str]) -> list[Entry]:
    """`unconfirmed` entries: windows whose outcome at the site was not confirmed."""
    by_window: dict[tuple[str, datetime], list[WindowRecord]] = defaultdict(list)
    for record in outcomes:
        if record.site_id in sites:
            by_window[(record.site_id, record.starts_at)].append(record)
    out: list[Entry] = []
    for (site, starts_at), records in by_window.items():
        verdict = worst([r.verdict for r in records])
        if verdict in NOT_CONFIRMED:
            ends_at = max(r.ends_at for r in records)
            out.append(Entry(site, Change.UNCONFIRMED, ends_at, starts_at))
    return out


def changes(
    steps: Iterable[DeviceEvent],
    outcomes: Iterable[WindowRecord],
    devices_of: Mapping[str, Collection[str]],
    registered: Mapping[str, datetime],
    limit: int = MAX_ENTRIES,
) -> list[Entry]:
    """The newest `limit` entries, newest first (ties by site, then kind)."""
    found = step_changes(steps, devices_of, registered)
    found += window_changes(outcomes, set(devices_of))
    found.sort(key=lambda e: (e.at, e.site, e.kind.value), reverse=True)
    return found[:limit]


# ---- the document -------------------------------------------------------------------


def _clean(text: str) -> str:
    """Text XML 1.0 can carry: control characters other than tab and newline dropped."""
    return "".join(
        ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs")
    )


def _instant(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        node.text = _clean(text)
    return node


def entry_title(kind: Change, site_name: str, color: str | None) -> str:
    if kind is Change.LIT:
        return f"{site_name} is lit in {color}" if color else f"{site_name} is lit"
    if kind is Change.OFF:
        return f"{site_name} is off"
    return f"{site_name}: the lighting was not confirmed"


def entry_summary(entry: Entry, site_name: str) -> str:
    when = _instant(entry.at)
    if entry.kind is Change.UNCONFIRMED:
        return (
            f"No confirmation from {site_name} reached the controller for the window "
            f"that began at {_instant(entry.key)}."
        )
    state = f"was lit in {entry.color}" if entry.kind is Change.LIT else "turned off"
    how = HOW[entry.confirmed_by] if entry.confirmed_by else "its lighting controller"
    return f"{site_name} {state} at {when}, as {how} confirmed."


def render_feed(
    entries: Sequence[Entry],
    city: City | None,
    sites: Mapping[str, Site],
    self_path: str,
    page_path: str = "/",
    lang: str = "en",
    cities: Mapping[str, City] | None = None,
) -> bytes:
    """The Atom document of one city's entries, or of every city's (`city` None: each
    monument is named with its city, from `cities`). Links are paths (no host): the
    same bytes whatever the host a request named, so a shared cache keeps one copy."""
    ET.register_namespace("", ATOM)
    if city is not None:
        where = display_name(city.name, lang)
        feed_key, title = f"city/{city.id}", f"Illuminate: {where}"
        subtitle = f"When the monuments of {where} were lit or turned off, as they confirmed"
    else:
        feed_key, title = "every-city", "Illuminate: every city"
        subtitle = "When the monuments were lit or turned off, as they confirmed"
    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": lang})
    _sub(feed, "id", f"urn:uuid:{uuid.uuid5(_IDS, feed_key)}")
    _sub(feed, "title", title)
    _sub(feed, "subtitle", subtitle)
    _sub(feed, "updated", _instant(max((e.at for e in entries), default=NOTHING_YET)))
    _sub(feed, "link", rel="self", type="application/atom+xml", href=self_path)
    _sub(feed, "link", rel="alternate", type="text/html", href=page_path)
    author = _sub(feed, "author")
    _sub(author, "name", "Illuminate")
    _sub(feed, "generator", "Illuminate")
    for entry in entries:
        site = sites.get(entry.site)
        name = display_name(site.name, lang) if site is not None else entry.site
        town = cities.get(site.city) if city is None and cities and site else None
        if town is not None:
            name = f"{name}, {display_name(town.name, lang)}"
        node = _sub(feed, "entry")
        _sub(node, "id", entry.id)
        _sub(node, "title", entry_title(entry.kind, name, entry.color))
        _sub(node, "updated", _instant(entry.at))
        _sub(node, "published", _instant(entry.at))
        _sub(node, "category", term=entry.kind.value, label=entry.kind.value)
        if entry.confirmed_by is not None:
            _sub(node, "category", term=f"confirmed-by-{entry.confirmed_by.value}")
        _sub(node, "summary", entry_summary(entry, name))
        _sub(node, "link", rel="alternate", type="text/html", href=page_path)
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body
