"""Sunrise, sunset and twilight instants, keyed by local date. Pure: no clock, no I/O.

Conventions (USNO): an event is the instant the geometric (unrefracted, topocentric) altitude of
the Sun's centre crosses a threshold.

- sunrise, sunset: -0.8333 deg (0 deg 50': 34' of standard refraction plus the 16'
  semi-diameter, i.e. the upper limb touches the apparent horizon);
- civil dawn, civil dusk: -6 deg;
- nautical dawn, nautical dusk: -12 deg.

What "the sunset of date D" means, in the site's zone:

- an evening event (sunset, civil dusk, nautical dusk) is the first downward crossing after local
  noon of D and before local noon of D+1, so Tromso's sunset at 00:28 on 18 May 2026 belongs
  to 17 May; conversely a sunset before local noon (Tromso on the eve of the polar night) is not
  that day's sunset;
- a morning event (sunrise, civil dawn, nautical dawn) is the first upward crossing after local
  midnight of D and before local midnight of D+1;
- `None` when there is no such crossing: polar day or night, or twilight that never gets dark
  enough in summer at high latitude.

The Sun's place: the Earth's heliocentric longitude from VSOP87 (Bretagnon & Francou 1988),
truncated as in Meeus, "Astronomical Algorithms" (2nd ed., appendix III), with the FK5
correction, aberration and the short nutation series of Meeus ch. 22, and sidereal time from
Meeus (12.4). Against full ephemerides (PyEphem, astropy) the apparent longitude is within 1"
from 1960 to 2100 and the altitude within 0.0003 deg: event times agree to the second, and
within 2 s in the grazing cases where any error is magnified as the Sun's path becomes tangent
to the threshold.

The crossing is found without a fixed-step scan: between a transit (the altitude's maximum) and
the next antitransit (its minimum) the altitude is monotonic, so the interval is split at the
transits, each piece is checked for a sign change in the wanted direction and the crossing is
refined by bisection to under a second. A transit whose altitude is within `_GRAZING` of the
threshold is replaced by the true extreme (golden-section search), which can be off the transit
by seconds to minutes because the declination changes during the day.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
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
        """Sunrise and the dawns: the Sun going up, keyed by local midnight."""
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

# --- The Sun's apparent place ------------------------------------------------------------------

_Series = tuple[tuple[float, float, float], ...]
"""VSOP87 terms A cos(B + C tau): A in 1e-8 rad (or 1e-8 AU), tau in Julian millennia of TT.

The Earth's series of Meeus's appendix III (VSOP87D), less the terms that cannot reach 0.01"
between 1900 and 2100 (|tau| <= 0.1): L1 below 48, L2 below 480, L3 to L5, and the radius (only
used for the 20" of aberration) below 1000 and beyond R1.
"""

_L0: _Series = (
    (175347046, 0, 0),
    (3341656, 4.6692568, 6283.0758500),
    (34894, 4.62610, 12566.15170),
    (3497, 2.7441, 5753.3849),
    (3418, 2.8289, 3.5231),
    (3136, 3.6277, 77713.7715),
    (2676, 4.4181, 7860.4194),
    (2343, 6.1352, 3930.2097),
    (1324, 0.7425, 11506.7698),
    (1273, 2.0371, 529.6910),
    (1199, 1.1096, 1577.3435),
    (990, 5.233, 5884.927),
    (902, 2.045, 26.298),
    (857, 3.508, 398.149),
    (780, 1.179, 5223.694),
    (753, 2.533, 5507.553),
    (505, 4.583, 18849.228),
    (492, 4.205, 775.523),
    (357, 2.920, 0.067),
    (317, 5.849, 11790.629),
    (284, 1.899, 796.298),
    (271, 0.315, 10977.079),
    (243, 0.345, 5486.778),
    (206, 4.806, 2544.314),
    (205, 1.869, 5573.143),
    (202, 2.458, 6069.777),
    (156, 0.833, 213.299),
    (132, 3.411, 2942.463),
    (126, 1.083, 20.775),
    (115, 0.645, 0.980),
    (103, 0.636, 4694.003),
    (102, 0.976, 15720.839),
    (102, 4.267, 7.114),
    (99, 6.21, 2146.17),
    (98, 0.68, 155.42),
    (86, 5.98, 161000.69),
    (85, 1.30, 6275.96),
    (85, 3.67, 71430.70),
    (80, 1.81, 17260.15),
    (79, 3.04, 12036.46),
    (75, 1.76, 5088.63),
    (74, 3.50, 3154.69),
    (74, 4.68, 801.82),
    (70, 0.83, 9437.76),
    (62, 3.98, 8827.39),
    (61, 1.82, 7084.90),
    (57, 2.78, 6286.60),
    (56, 4.39, 14143.50),
    (56, 3.47, 6279.55),
    (52, 0.19, 12139.55),
    (52, 1.33, 1748.02),
    (51, 0.28, 5856.48),
    (49, 0.49, 1194.45),
    (41, 5.37, 8429.24),
    (41, 2.40, 19651.05),
    (39, 6.17, 10447.39),
    (37, 6.04, 10213.29),
    (37, 2.57, 1059.38),
    (36, 1.71, 2352.87),
    (36, 1.78, 6812.77),
    (33, 0.59, 17789.85),
    (30, 0.44, 83996.85),
    (30, 2.74, 1349.87),
    (25, 3.16, 4690.48),
)
_L1: _Series = (
    (628331966747, 0, 0),
    (206059, 2.678235, 6283.075850),
    (4303, 2.6351, 12566.1517),
    (425, 1.590, 3.523),
    (119, 5.796, 26.298),
    (109, 2.966, 1577.344),
    (93, 2.59, 18849.23),
    (72, 1.14, 529.69),
    (68, 1.87, 398.15),
    (67, 4.41, 5507.55),
    (59, 2.89, 5223.69),
    (56, 2.17, 155.42),
)
_L2: _Series = (
    (52919, 0, 0),
    (8720, 1.0721, 6283.0758),
)
_B0: _Series = (
    (280, 3.199, 84334.662),
    (102, 5.422, 5507.553),
    (80, 3.88, 5223.69),
    (44, 3.70, 2352.87),
    (32, 4.00, 1577.34),
)
_R0: _Series = (
    (100013989, 0, 0),
    (1670700, 3.0984635, 6283.0758500),
    (13956, 3.05525, 12566.15170),
    (3084, 5.1985, 77713.7715),
    (1628, 1.1739, 5753.3849),
    (1576, 2.8469, 7860.4194),
)
_R1: _Series = (
    (103019, 1.107490, 6283.075850),
    (1721, 1.0644, 12566.1517),
)

_J2000_UNIX = 946_728_000.0  # 2000-01-01T12:00:00 (JD 2451545.0) as Unix seconds
_DELTA_T = 69.0
"""TT - UT, seconds: its value in the 2020s. The Sun moves 2.5" along the ecliptic per minute of
error in it, so decades away from now it still costs well under a second of event time."""
_ARCSEC = math.pi / 648_000.0


def _vsop(series: tuple[_Series, ...], tau: float) -> float:
    total = 0.0
    power = 1.0
    for terms in series:
        total += power * sum(a * math.cos(b + c * tau) for a, b, c in terms)
        power *= tau
    return total * 1e-8


@lru_cache(maxsize=256)
def _apparent_place(s: float) -> tuple[float, float]:
    """Right ascension less the equation of the equinoxes (deg), and declination (rad).

    The first is what the mean sidereal time is compared with to get the hour angle. Cached:
    the days of a schedule share their noons and midnights, where `_Track` samples it.
    """
    t = ((s - _J2000_UNIX) + _DELTA_T) / (86_400.0 * 36_525.0)  # Julian centuries of TT
    tau = t / 10.0
    # Geocentric longitude and latitude of the Sun, FK5 (Meeus ch. 25, "higher accuracy").
    lon = _vsop((_L0, _L1, _L2), tau) + math.pi
    lat = -_vsop((_B0,), tau)
    radius = _vsop((_R0, _R1), tau)
    lon_fk5 = lon - math.radians(t * (1.397 + 0.00031 * t))
    lon -= 0.09033 * _ARCSEC
    lat += 0.03916 * _ARCSEC * (math.cos(lon_fk5) - math.sin(lon_fk5))
    # Nutation (Meeus ch. 22, to 0.5" and 0.1"), aberration, true obliquity.
    sun_mean = math.radians(280.4665 + 36_000.7698 * t)
    moon_mean = math.radians(218.3165 + 481_267.8813 * t)
    node = math.radians(125.04452 - t * (1934.136261 - t * (0.0020708 + t / 450_000.0)))
    d_psi = _ARCSEC * (
        -17.20 * math.sin(node)
        - 1.32 * math.sin(2.0 * sun_mean)
        - 0.23 * math.sin(2.0 * moon_mean)
        + 0.21 * math.sin(2.0 * node)
    )
    d_eps = _ARCSEC * (
        9.20 * math.cos(node)
        + 0.57 * math.cos(2.0 * sun_mean)
        + 0.10 * math.cos(2.0 * moon_mean)
        - 0.09 * math.cos(2.0 * node)
    )
    lon += d_psi - 20.4898 * _ARCSEC / radius
    eps0 = 84_381.448 - t * (46.8150 + t * (0.00059 - 0.001813 * t))  # arcseconds
    eps = eps0 * _ARCSEC + d_eps
    sin_eps, cos_eps = math.sin(eps), math.cos(eps)
    sin_lon = math.sin(lon)
    ra = math.atan2(sin_lon * cos_eps - math.tan(lat) * sin_eps, math.cos(lon))
    dec = math.asin(math.sin(lat) * cos_eps + math.cos(lat) * sin_eps * sin_lon)
    return math.degrees(ra - d_psi * cos_eps), dec


def _mean_sidereal_time(s: float) -> float:
    """Greenwich mean sidereal time, degrees (not reduced to [0, 360)), Meeus (12.4)."""
    days = (s - _J2000_UNIX) / 86_400.0
    t = days / 36_525.0
    return 280.46061837 + 360.98564736629 * days + t * t * (0.000387933 - t / 38_710_000.0)


def _wrap180(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def _check_place(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"latitude must be within [-90, 90], got {lat}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"longitude must be within [-180, 180], got {lon}")


_PARALLAX = 8.794 / 3600.0
"""The Sun's horizontal parallax, degrees, at 1 AU (its distance changes it by 0.15")."""


def _altitude(ha_deg: float, dec: float, sin_lat: float, cos_lat: float) -> float:
    """Topocentric altitude, degrees, from the geocentric hour angle and declination."""
    x = sin_lat * math.sin(dec) + cos_lat * math.cos(dec) * math.cos(math.radians(ha_deg))
    geocentric = math.asin(max(-1.0, min(1.0, x)))
    return math.degrees(geocentric) - _PARALLAX * math.cos(geocentric)


def altitude(t: datetime, lat: float, lon: float) -> float:
    """Geometric (unrefracted) altitude of the Sun's centre at `t` seen from (lat, lon), degrees.

    Topocentric: the Sun's 8.8" parallax is included, as PyEphem and USNO do.
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("altitude needs an aware datetime")
    _check_place(lat, lon)
    s = t.timestamp()
    q, dec = _apparent_place(s)
    phi = math.radians(lat)
    return _altitude(_mean_sidereal_time(s) + lon - q, dec, math.sin(phi), math.cos(phi))


# --- Crossings ---------------------------------------------------------------------------------

_SOLAR_RATE = 360.0 / 86_400.0  # mean rate of the Sun's hour angle, deg/s
_RESOLUTION = 0.5  # seconds: bisection stops when the bracket is shorter
_GRAZING = 0.1
"""Degrees. The altitude's extremes are within 1e-3 deg of the altitude at transit up to 85 deg
of latitude (0.005 deg at 89.5 deg); a transit closer than this to the threshold is replaced by
the true extreme, so a brief crossing just around it is neither missed nor misplaced."""
_GRAZING_WINDOW = 3600.0  # seconds either side of such a transit searched for the extreme


class _Track:
    """The Sun's altitude and hour angle over [a, b], a day or so, at one place.

    The apparent place (the costly part) is computed at both ends and the middle and
    interpolated quadratically: it moves about 1 deg a day, so the interpolation error over a
    day is below 0.01", while sidereal time is computed exactly.
    """

    __slots__ = ("cos_lat", "dec", "lon", "mid", "q", "scale", "sin_lat")

    def __init__(self, lat: float, lon: float, a: float, b: float) -> None:
        phi = math.radians(lat)
        self.sin_lat, self.cos_lat, self.lon = math.sin(phi), math.cos(phi), lon
        self.mid = (a + b) / 2.0
        self.scale = 2.0 / (b - a)
        (q0, d0), (q1, d1), (q2, d2) = (_apparent_place(x) for x in (a, self.mid, b))
        q1 = q0 + _wrap180(q1 - q0)
        q2 = q1 + _wrap180(q2 - q1)
        # f(x) = f1 + x (f2 - f0) / 2 + x^2 ((f0 + f2) / 2 - f1), x in [-1, 1]
        self.q = (q1, (q2 - q0) / 2.0, (q0 + q2) / 2.0 - q1)
        self.dec = (d1, (d2 - d0) / 2.0, (d0 + d2) / 2.0 - d1)

    def hour_angle_dec(self, s: float) -> tuple[float, float]:
        x = (s - self.mid) * self.scale
        q0, q1, q2 = self.q
        d0, d1, d2 = self.dec
        ha = _mean_sidereal_time(s) + self.lon - (q0 + x * (q1 + x * q2))
        return ha, d0 + x * (d1 + x * d2)

    def altitude(self, s: float) -> float:
        ha, dec = self.hour_angle_dec(s)
        return _altitude(ha, dec, self.sin_lat, self.cos_lat)

    def transits(self, a: float, b: float) -> list[tuple[float, bool]]:
        """Meridian passages in (a, b), in order: (instant, True if upper, False if lower)."""
        ha = self.hour_angle_dec(a)[0] % 360.0
        target = (math.floor(ha / 180.0) + 1.0) * 180.0  # the next multiple of 180 deg
        s = a + (target - ha) / _SOLAR_RATE
        found: list[tuple[float, bool]] = []
        while True:
            # The hour angle's rate is within 0.04 % of the mean, so a single Newton step lands
            # well under a second from the transit, plenty for splitting the interval.
            s -= _wrap180(self.hour_angle_dec(s)[0] - target) / _SOLAR_RATE
            if s >= b:
                return found
            if s > a:
                found.append((s, target % 360.0 == 0.0))
            target += 180.0
            s += 180.0 / _SOLAR_RATE

    def extreme(self, lo: float, hi: float, maximum: bool) -> float:
        """Golden-section search for the instant of the highest (lowest) altitude in [lo, hi]."""
        sign = -1.0 if maximum else 1.0
        k = (math.sqrt(5.0) - 1.0) / 2.0
        x1, x2 = hi - k * (hi - lo), lo + k * (hi - lo)
        f1, f2 = sign * self.altitude(x1), sign * self.altitude(x2)
        while hi - lo > 1.0:
            if f1 < f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - k * (hi - lo)
                f1 = sign * self.altitude(x1)
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + k * (hi - lo)
                f2 = sign * self.altitude(x2)
        return (lo + hi) / 2.0

    def first_crossing(self, a: float, b: float, threshold: float, rising: bool) -> float | None:
        """The first instant in (a, b) at which the altitude crosses `threshold` that way."""
        points = [a]
        for s, upper in self.transits(a, b):
            if abs(self.altitude(s) - threshold) < _GRAZING:
                lo, hi = max(a, s - _GRAZING_WINDOW), min(b, s + _GRAZING_WINDOW)
                s = self.extreme(lo, hi, maximum=upper)
            points.append(s)
        points.append(b)
        values = [self.altitude(s) - threshold for s in points]
        for i in range(len(points) - 1):
            f0, f1 = values[i], values[i + 1]
            if (f0 < 0.0 <= f1) if rising else (f0 > 0.0 >= f1):
                lo, hi = points[i], points[i + 1]
                while hi - lo > _RESOLUTION:
                    mid = (lo + hi) / 2.0
                    if (self.altitude(mid) < threshold) == rising:
                        lo = mid
                    else:
                        hi = mid
                return (lo + hi) / 2.0
        return None


def _local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Wall time `at` on `day` as an instant, by the rule of schedules.expand.local_to_utc.

    With fold=0 a local midnight skipped by a spring gap (America/Santiago, at 24:00) becomes
    the end of the gap, the first instant of the day.
    """
    return datetime.combine(day, at, tzinfo=zone).replace(fold=0).astimezone(UTC)


def sun_event(
    event: SunEvent, day: date, lat: float, lon: float, zone: ZoneInfo
) -> datetime | None:
    """The instant (aware, UTC, whole second) of `event` for local date `day`, or None.

    Morning events: the first upward crossing from local midnight of `day` to the next local
    midnight. Evening events: the first downward crossing from local noon of `day` to local noon
    of the next day, so an evening event just after midnight stays with the evening it ends.
    None when the Sun does not cross the event's altitude that way in that interval.
    """
    _check_place(lat, lon)
    at = time(0) if event.is_morning else time(12)
    a = _local_instant(day, at, zone).timestamp()
    b = _local_instant(day + timedelta(days=1), at, zone).timestamp()
    s = _Track(lat, lon, a, b).first_crossing(a, b, THRESHOLDS[event], rising=event.is_morning)
    return None if s is None else datetime.fromtimestamp(round(s), tz=UTC)
