"""Sunrise, sunset and twilight instants, keyed by local date. Pure: no clock, no I/O.

Conventions (USNO): an event is the instant the geometric (unrefracted) altitude of the Sun's
centre crosses a threshold.

- sunrise, sunset: -0.8333 deg (0 deg 50', i.e. 34' of standard refraction plus the 16'
  semi-diameter: the upper limb touches the apparent horizon);
- civil dawn, civil dusk: -6 deg;
- nautical dawn, nautical dusk: -12 deg.

What "the sunset of date D" means, in the site's zone:

- an evening event (sunset, civil dusk, nautical dusk) is the first downward crossing after local
  noon of D and before local noon of D+1, so a sunset at 00:02 on the night of 17 to 18 May
  belongs to 17 May;
- a morning event (sunrise, civil dawn, nautical dawn) is the first upward crossing after local
  midnight of D and before local midnight of D+1;
- `None` when there is no such crossing: polar day or night, or twilight that never gets dark
  enough in summer at high latitude.

The Sun's position comes from the low-precision solar coordinates of Meeus, "Astronomical
Algorithms" (2nd ed.), ch. 25 (the algorithm of NOAA's solar calculator), good to about 0.01 deg,
and Greenwich sidereal time from Meeus ch. 12. The instant of a crossing is found without a
fixed-step scan: between a transit (altitude maximum) and the next antitransit (minimum) the
altitude is monotonic, so the interval is split at the transits, each piece is checked for a
sign change and the crossing is refined by bisection to under a second.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = ["THRESHOLDS", "SunEvent", "altitude", "sun_event"]


class SunEvent(StrEnum):
    SUNRISE = "sunrise"
    SUNSET = "sunset"
    CIVIL_DAWN = "civil_dawn"
    CIVIL_DUSK = "civil_dusk"
    NAUTICAL_DAWN = "nautical_dawn"
    NAUTICAL_DUSK = "nautical_dusk"

    @property
    def is_morning(self) -> bool:
        return self in _MORNING


_MORNING = frozenset({SunEvent.SUNRISE, SunEvent.CIVIL_DAWN, SunEvent.NAUTICAL_DAWN})

THRESHOLDS: dict[SunEvent, float] = {
    SunEvent.SUNRISE: -50.0 / 60.0,
    SunEvent.SUNSET: -50.0 / 60.0,
    SunEvent.CIVIL_DAWN: -6.0,
    SunEvent.CIVIL_DUSK: -6.0,
    SunEvent.NAUTICAL_DAWN: -12.0,
    SunEvent.NAUTICAL_DUSK: -12.0,
}
"""Geometric altitude of the Sun's centre, in degrees, at which each event happens."""

_J2000_UNIX = 946_728_000.0  # 2000-01-01T12:00:00Z, JD 2451545.0, in Unix seconds
_DELTA_T = 69.0
"""TT - UT in seconds, close to its value in the 2020s. It only shifts the Sun's longitude
(1 deg/day): a few tens of seconds of error in it would move an event by well under a second."""
_SOLAR_RATE = 360.0 / 86_400.0  # mean rate of the Sun's hour angle, deg/s
_RESOLUTION = 0.5  # seconds: bisection stops when the bracket is shorter
_GRAZING = 0.1
"""Degrees. The extremes of the altitude are within seconds of a transit and 1e-3 deg of its
altitude at most latitudes (0.005 deg at 89.5 deg); when a transit's altitude is this close to
the threshold, the true extreme is searched for, so a brief grazing crossing is not missed."""
_GRAZING_WINDOW = 3600.0  # seconds either side of the transit searched for the true extreme


def _wrap180(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


class _Site:
    """Altitude and hour angle of the Sun as functions of Unix seconds, for one place."""

    __slots__ = ("cos_lat", "lon", "sin_lat")

    def __init__(self, lat: float, lon: float) -> None:
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise ValueError(f"latitude must be within [-90, 90], got {lat}")
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise ValueError(f"longitude must be within [-180, 180], got {lon}")
        phi = math.radians(lat)
        self.sin_lat = math.sin(phi)
        self.cos_lat = math.cos(phi)
        self.lon = lon

    def _hour_angle_dec(self, s: float) -> tuple[float, float]:
        """Local hour angle (deg, unwrapped) and declination (radians) of the Sun."""
        days_ut = (s - _J2000_UNIX) / 86_400.0
        t = (days_ut + _DELTA_T / 86_400.0) / 36_525.0  # Julian centuries of TT
        # Meeus ch. 25: geometric mean longitude, mean anomaly, equation of the centre.
        l0 = 280.46646 + t * (36_000.76983 + 0.0003032 * t)
        m = math.radians(357.52911 + t * (35_999.05029 - 0.0001537 * t))
        c = (
            (1.914602 - t * (0.004817 + 0.000014 * t)) * math.sin(m)
            + (0.019993 - 0.000101 * t) * math.sin(2.0 * m)
            + 0.000289 * math.sin(3.0 * m)
        )
        omega = math.radians(125.04 - 1934.136 * t)
        sin_omega = math.sin(omega)
        # Apparent longitude: aberration (-0.00569) and nutation in longitude (-0.00478 sin O).
        lam = math.radians(l0 + c - 0.00569 - 0.00478 * sin_omega)
        eps0 = 23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - 0.001813 * t))) / 60.0) / 60.0
        eps = math.radians(eps0 + 0.00256 * math.cos(omega))
        sin_lam = math.sin(lam)
        ra = math.degrees(math.atan2(math.cos(eps) * sin_lam, math.cos(lam)))
        dec = math.asin(math.sin(eps) * sin_lam)
        # Meeus (12.4), mean sidereal time at Greenwich, plus the equation of the equinoxes.
        gmst = 280.46061837 + 360.98564736629 * days_ut + t * t * (0.000387933 - t / 38_710_000.0)
        gast = gmst - 0.00478 * sin_omega * math.cos(eps)
        return gast + self.lon - ra, dec

    def altitude(self, s: float) -> float:
        """Geometric altitude of the Sun's centre, degrees."""
        ha, dec = self._hour_angle_dec(s)
        x = self.sin_lat * math.sin(dec) + self.cos_lat * math.cos(dec) * math.cos(math.radians(ha))
        return math.degrees(math.asin(max(-1.0, min(1.0, x))))

    def transits(self, a: float, b: float) -> list[tuple[float, bool]]:
        """Meridian passages in (a, b): (instant, True for upper / False for lower), in order."""
        ha, _ = self._hour_angle_dec(a)
        ha %= 360.0
        target = (math.floor(ha / 180.0) + 1.0) * 180.0  # the next multiple of 180 deg
        s = a + (target - ha) / _SOLAR_RATE
        found: list[tuple[float, bool]] = []
        while True:
            # The hour angle's rate is within 0.04 % of the mean: one Newton step reaches
            # well under a second, which is plenty for splitting the interval.
            ha, _ = self._hour_angle_dec(s)
            s -= _wrap180(ha - target) / _SOLAR_RATE
            if s >= b:
                return found
            if s > a:
                found.append((s, target % 360.0 == 0.0))
            target += 180.0
            s += 180.0 / _SOLAR_RATE


def _extreme(f_alt: _Site, lo: float, hi: float, maximum: bool) -> float:
    """Golden-section search for the instant of the extreme altitude in [lo, hi]."""
    sign = -1.0 if maximum else 1.0
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1 = hi - inv_phi * (hi - lo)
    x2 = lo + inv_phi * (hi - lo)
    f1 = sign * f_alt.altitude(x1)
    f2 = sign * f_alt.altitude(x2)
    while hi - lo > 1.0:
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - inv_phi * (hi - lo)
            f1 = sign * f_alt.altitude(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + inv_phi * (hi - lo)
            f2 = sign * f_alt.altitude(x2)
    return (lo + hi) / 2.0


def _first_crossing(
    site: _Site, a: float, b: float, threshold: float, rising: bool
) -> float | None:
    """The first instant in (a, b) where the altitude crosses `threshold` in that direction."""
    points = [a]
    for s, upper in site.transits(a, b):
        if abs(site.altitude(s) - threshold) < _GRAZING:
            lo, hi = max(a, s - _GRAZING_WINDOW), min(b, s + _GRAZING_WINDOW)
            s = _extreme(site, lo, hi, maximum=upper)
        points.append(s)
    points.append(b)
    values = [site.altitude(s) - threshold for s in points]
    for i in range(len(points) - 1):
        f0, f1 = values[i], values[i + 1]
        if (f0 < 0.0 <= f1) if rising else (f0 > 0.0 >= f1):
            lo, hi = points[i], points[i + 1]
            while hi - lo > _RESOLUTION:
                mid = (lo + hi) / 2.0
                if (site.altitude(mid) - threshold < 0.0) == rising:
                    lo = mid
                else:
                    hi = mid
            return (lo + hi) / 2.0
    return None


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of local date `day`, as schedules.expand resolves wall times.

    With fold=0, a midnight skipped by a spring gap (America/Santiago) maps to the instant the
    day begins, the end of the gap.
    """
    return datetime.combine(day, time(0), tzinfo=zone).replace(fold=0).astimezone(UTC)


def sun_event(
    event: SunEvent, day: date, lat: float, lon: float, zone: ZoneInfo
) -> datetime | None:
    """The UTC instant of `event` for local date `day` at (lat, lon), or None if none.

    Morning events: the first upward crossing in [local midnight of `day`, next local midnight).
    Evening events: the first downward crossing in [local noon of `day`, local noon of the next
    day), so an evening event just after midnight stays with the evening it ends. The result is
    rounded to the second.
    """
    site = _Site(lat, lon)
    if event.is_morning:
        start = _day_start(day, zone)
        end = _day_start(day + timedelta(days=1), zone)
    else:
        start = datetime.combine(day, time(12), tzinfo=zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(12), tzinfo=zone).astimezone(UTC)
    s = _first_crossing(
        site, start.timestamp(), end.timestamp(), THRESHOLDS[event], rising=event.is_morning
    )
    if s is None:
        return None
    return datetime.fromtimestamp(round(s), tz=UTC)


def altitude(t: datetime, lat: float, lon: float) -> float:
    """Geometric (unrefracted) altitude of the Sun's centre at instant `t`, in degrees."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("altitude needs an aware datetime")
    return _Site(lat, lon).altitude(t.timestamp())
