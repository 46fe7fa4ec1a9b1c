"""The schedule domain: cities, sites, campaigns and their windows. Pure, frozen, strict."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,47}$"
_ID_RE = re.compile(ID_PATTERN)
_COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
MAX_WINDOWS = 1000
MAX_DATES = 3660


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
Names = dict[str, Annotated[str, Field(min_length=1, max_length=200)]]


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


class Site(_Frozen):
    id: Id
    city: Id
    name: Names = Field(min_length=1)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    tags: tuple[Id, ...] = ()


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

    on: bool
    color: Color = "#000000"
    level: int = Field(default=0, ge=0, le=100)


class Targets(_Frozen):
    """Which sites a window covers. Keys combine: a site matching any key is in."""

    all: bool = False
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


class At(_Frozen):
    """A local wall-clock time in the site's time zone."""

    at: LocalTime


class Window(_Frozen):
    targets: Targets
    dates: tuple[date, ...] = Field(min_length=1, max_length=MAX_DATES)
    start: At
    end: At


class Campaign(_Frozen):
    id: Id
    title: Names = Field(min_length=1)
    color: Color
    level: int = Field(default=100, ge=0, le=100)
    priority: int = Field(default=50, ge=0, le=1000)
    on: bool = True
    windows: tuple[Window, ...] = Field(min_length=1, max_length=MAX_WINDOWS)

    @property
    def light(self) -> Light:
        if not self.on:
            return Light(on=False)
        return Light(on=True, color=self.color, level=self.level)
