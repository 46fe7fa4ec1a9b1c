"""The schedule domain: cities, sites, campaigns and their windows. Pure, frozen, strict."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, time, timedelta
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    model_serializer,
    model_validator,
)

from schedules.budget import Budget
from schedules.recurrence import check_rule, rule_days
from schedules.rollout import RolloutConfig
from schedules.solar import SunEvent

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,47}$"
_ID_RE = re.compile(ID_PATTERN)
_COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
MAX_WINDOWS = 1000
MAX_DATES = 3660


class _Frozen(BaseModel):
    """Unknown keys are refused; booleans and whole numbers must be written as such
    (`"80"` is not a level, nor `"yes"` a boolean)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def is_id(value: str) -> bool:
    """Does `value` follow the id rule (DESIGN.md): 1-48 of a-z, 0-9 and '-'?"""
    return bool(_ID_RE.fullmatch(value))


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid id (lower-case letters, digits and '-')")
    return value


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _check_color(value: str) -> str:
    if not _COLOR_RE.fullmatch(value):
        raise ValueError(f"colour must be #RRGGBB, not {value!r}")
    return value.upper()


def _parse_local_time(value: object) -> object:
    if isinstance(value, str):
        match = _TIME_RE.fullmatch(value)
        if not match:
            raise ValueError(f"time must be HH:MM or HH:MM:SS (00:00-23:59), not {value!r}")
        hours, minutes, seconds = match.groups()
        return time(int(hours), int(minutes), int(seconds or 0))
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Zone = Annotated[str, AfterValidator(_check_zone)]
Color = Annotated[str, AfterValidator(_check_color)]
LocalTime = Annotated[time, BeforeValidator(_parse_local_time)]


def _check_text(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("text may not hold control characters (NUL, tab, newline, ...)")
    return value


Text = Annotated[str, AfterValidator(_check_text)]
Names = dict[
    Annotated[str, Field(min_length=1, max_length=35), AfterValidator(_check_text)],
    Annotated[Text, Field(min_length=1, max_length=200)],
]


def display_name(names: dict[str, str], lang: str = "en") -> str:
    """The name in `lang`, else English, else any."""
    return names.get(lang) or names.get("en") or next(iter(names.values()), "")


class City(_Frozen):
    id: Id
    name: Names = Field(min_length=1)
    timezone: Zone

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_PHOTO_RE = re.compile(r"^/[A-Za-z0-9._~/-]{1,300}\.(?:jpe?g|png|webp|avif)$")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ./()-]{1,30}[0-9]$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+\.[A-Za-z]{2,}(?:[/?#][^\s<>\"']*)?$")


def _check_photo(value: str) -> str:
    if ".." in value or "//" in value or not _PHOTO_RE.fullmatch(value):
        raise ValueError(
            f"photo must be a path on this site ending in .jpg, .png, .webp or .avif "
            f"(e.g. /static/photos/atomium.jpg), not {value!r}"
        )
    return value


def _check_phone(value: str) -> str:
    if not _PHONE_RE.fullmatch(value):
        raise ValueError(
            f"number must be digits, with spaces, '.', '/', '-' or '()' between, not {value!r}"
        )
    return value


def _check_country(value: str) -> str:
    if not _COUNTRY_RE.fullmatch(value):
        raise ValueError(f"country must be an ISO 3166 code of two capitals (BE), not {value!r}")
    return value


def _check_url_opt(value: str | None) -> str | None:
    return None if value is None else _check_url(value)


def _check_url(value: str) -> str:
    if not _URL_RE.fullmatch(value):
        raise ValueError(f"url must be https://host/..., not {value!r}")
    return value


def _bare_url(value: object) -> object:
    """`www.example.org` is written as people say it: read as https://www.example.org."""
    if isinstance(value, str) and ":" not in value and not value.startswith("/"):
        return f"https://{value}"
    return value


class Photo(_Frozen):
    """A picture of a site, served by the product itself (the page loads nothing from
    elsewhere), and its text for those who cannot see it, per language."""

    src: Annotated[str, AfterValidator(_check_photo)]
    alt: Names = Field(min_length=1)


class Site(_Frozen):
    id: Id
    city: Id
    name: Names = Field(min_length=1)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    tags: tuple[Id, ...] = ()
    photo: Photo | None = None


class SiteCatalog(_Frozen):
    """The sites file: cities and the sites in them."""

    cities: tuple[City, ...] = ()
    sites: tuple[Site, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> SiteCatalog:
        _unique("cities", [c.id for c in self.cities])
        _unique("sites", [s.id for s in self.sites])
        known = {c.id for c in self.cities}
        for index, site in enumerate(self.sites):
            if site.city not in known:
                raise ValueError(f"sites[{index}].city: unknown city {site.city!r}")
        return self

    def city_of(self, site: Site) -> City:
        return next(c for c in self.cities if c.id == site.city)


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for index, value in enumerate(ids):
        if value in seen:
            raise ValueError(f"{what}[{index}].id: duplicate id {value!r}")
        seen.add(value)


class Light(_Frozen):
    """The desired look of a site: on or off, colour and level (percent)."""

    on: StrictBool
    color: Color = "#000000"
    level: StrictInt = Field(default=0, ge=0, le=100)


class Targets(_Frozen):
    """Which sites a window covers. Keys combine: a site matching any key is in."""

    all: StrictBool = False
    cities: tuple[Id, ...] = ()
    sites: tuple[Id, ...] = ()
    tags: tuple[Id, ...] = ()

    def matches(self, site: Site) -> bool:
        return (
            self.all
            or site.city in self.cities
            or site.id in self.sites
            or bool(set(site.tags) & set(self.tags))
        )

    @property
    def empty(self) -> bool:
        return not (self.all or self.cities or self.sites or self.tags)


_OFFSET_RE = re.compile(r"^([+-])?(?:(\d{1,2})h)?(?:(\d{1,4})m)?$")
MAX_OFFSET = timedelta(hours=12)


def _parse_offset(value: object) -> object:
    if isinstance(value, str):
        match = _OFFSET_RE.fullmatch(value.strip())
        if not match or not (match.group(2) or match.group(3)):
            raise ValueError(f"offset must look like -15m, +1h or -1h30m, not {value!r}")
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
        delta = -delta if sign == "-" else delta
        if abs(delta) > MAX_OFFSET:
            raise ValueError(f"offset {value!r} is more than 12 hours")
        return delta
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"offset must be a string like -15m, not {value!r}")


def format_offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{sign}{hours}h{mins}m"
        if hours and mins
        else (f"{sign}{hours}h" if hours else f"{sign}{mins}m")
    )


Offset = Annotated[timedelta, BeforeValidator(_parse_offset), PlainSerializer(format_offset)]


class TimeSpec(_Frozen):
    """`{at: "HH:MM"}` local wall time, or `{sun: EVENT, offset?, earliest?, latest?}`."""

    at: LocalTime | None = None
    sun: SunEvent | None = None
    offset: Offset = timedelta(0)
    earliest: LocalTime | None = None
    latest: LocalTime | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TimeSpec:
        if (self.at is None) == (self.sun is None):
            raise ValueError("give either 'at' (a local time) or 'sun' (a solar event)")
        solar_only = {"offset", "earliest", "latest"} & self.model_fields_set
        if self.at is not None and solar_only:
            raise ValueError("'offset', 'earliest' and 'latest' go with 'sun', not with 'at'")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, str]:
        """Only the keys that mean something, so a dump reads back as the same spec."""
        if self.at is not None:
            return {"at": self.at.strftime("%H:%M:%S")}
        assert self.sun is not None
        out = {"sun": self.sun.value}
        if self.offset:
            out["offset"] = format_offset(self.offset)
        if self.earliest is not None:
            out["earliest"] = self.earliest.strftime("%H:%M:%S")
        if self.latest is not None:
            out["latest"] = self.latest.strftime("%H:%M:%S")
        return out


class PolarPolicy(_Frozen):
    """What a window does on a date its solar event does not happen:
    `skip` (written `polar: skip`) or `fallback` (written `polar: {fallback: "22:00"}`)."""

    skip: StrictBool = False
    fallback: LocalTime | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if value == "skip":
            return {"skip": True}
        if isinstance(value, str):
            raise ValueError(f"polar must be 'skip' or {{fallback: \"HH:MM\"}}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> PolarPolicy:
        if self.skip == (self.fallback is not None):
            raise ValueError("polar must be 'skip' or {fallback: \"HH:MM\"}")
        return self

    @model_serializer
    def _as_written(self) -> str | dict[str, str]:
        if self.fallback is None:
            return "skip"
        return {"fallback": self.fallback.strftime("%H:%M:%S")}


def _check_rrule(value: str | None) -> str | None:
    return None if value is None else check_rule(value)


class Window(_Frozen):
    targets: Targets
    dates: tuple[date, ...] = Field(default=(), max_length=MAX_DATES)
    rrule: Annotated[str | None, AfterValidator(_check_rrule)] = None
    exdates: tuple[date, ...] = Field(default=(), max_length=MAX_DATES)
    start: TimeSpec
    end: TimeSpec
    polar: PolarPolicy | None = None

    @model_validator(mode="after")
    def _has_dates(self) -> Window:
        if not self.dates and not self.rrule:
            raise ValueError("a window needs 'dates', an 'rrule', or both")
        return self

    def days(self, first: date, last: date, budget: Budget | None = None) -> list[date]:
        """The local dates this window starts on, between first and last inclusive."""
        found = {d for d in self.dates if first <= d <= last}
        if self.rrule:
            found.update(rule_days(self.rrule, first, last, budget))
        return sorted(found - set(self.exdates))


class Helpline(_Frozen):
    """A telephone line the public can call, in one country."""

    country: Annotated[str, AfterValidator(_check_country)]
    number: Annotated[str, AfterValidator(_check_phone)]
    hours: Names | None = None
    """When it answers, per language (e.g. {en: 24/7}); None: not said."""


class CallToAction(_Frozen):
    """What the campaign asks of the public: a sentence per language, and where to turn."""

    text: Names = Field(min_length=1)
    helplines: tuple[Helpline, ...] = Field(default=(), max_length=20)
    url: Annotated[str | None, BeforeValidator(_bare_url), AfterValidator(_check_url_opt)] = None


class Campaign(_Frozen):
    """A campaign: a look (colour and level, or off) and the windows it holds.

    Overlaps are settled by priority (higher wins), then by age (newer wins). An
    override (`override: true`, with a `reason`) is a one-off that beats every ordinary
    campaign; `on: false` makes it switch the sites off, as in an emergency "all off".
    """

    id: Id
    title: Names = Field(min_length=1)
    color: Color = "#000000"
    level: StrictInt = Field(default=100, ge=0, le=100)
    priority: StrictInt = Field(default=50, ge=0, le=1000)
    on: StrictBool = True
    override: StrictBool = False
    reason: Text | None = Field(default=None, min_length=1, max_length=500)
    windows: tuple[Window, ...] = Field(min_length=1, max_length=MAX_WINDOWS)
    rollout: RolloutConfig | None = None
    """How a change made while one of its windows is open goes out (`schedules.rollout`)."""
    cause: Names | None = None
    """What the campaign is for, per language, as the public page shows it."""
    call_to_action: CallToAction | None = None
    """What the public page asks of its readers (a sentence, helplines, a link)."""

    @model_validator(mode="after")
    def _override_rules(self) -> Campaign:
        if self.override and not self.reason:
            raise ValueError("an override needs a 'reason'")
        if self.override and self.rollout is not None:
            raise ValueError("an override goes out at once: it cannot have a 'rollout'")
        if self.override and any(w.rrule for w in self.windows):
            raise ValueError("an override is one-off: give it 'dates', not an 'rrule'")
        if self.on and self.color == "#000000":
            raise ValueError("a campaign that lights needs a 'color' (#RRGGBB)")
        return self

    @property
    def light(self) -> Light:
        return _light(self.on, self.color, self.level)


@lru_cache(maxsize=4096)
def _light(on: bool, color: str, level: int) -> Light:
    """One shared Light per look: a campaign's windows at 10,000 sites share it."""
    if not on:
        return Light(on=False)
    return Light(on=True, color=color, level=level)
