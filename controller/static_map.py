"""The map without the script: one point per city, with how many of its monuments are
lit, drawn by the server as SVG inside the page's `<noscript>`. Pure: no I/O.

The script's map (Leaflet, `controller/web/static/map.js`) shows every monument on
tiles; a page read without scripts still shows where the cities are and how far each
is lit. Cities are placed by the mean of their monuments' coordinates, on an
equirectangular projection of the box around them (longitudes scaled by the cosine of
the box's middle latitude, so a country keeps its shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.public_page import CityView

WIDTH = 400.0
PAD = 40.0
"""Room around the box for a point's label."""


@dataclass(frozen=True)
class CityPoint:
    name: str
    x: float
    y: float
    r: float
    lit: int
    total: int


@dataclass(frozen=True)
class StaticMap:
    width: float
    height: float
    cities: tuple[CityPoint, ...]


def static_map(cities: Sequence[CityView]) -> StaticMap | None:
    """The cities with at least one placed monument, projected; None when there are none."""
    placed = []
    for city in cities:
        spots = [(s.lat, s.lon) for s in city.sites if s.lat is not None and s.lon is not None]
        if spots:
            lat = sum(p[0] for p in spots) / len(spots)
            lon = sum(p[1] for p in spots) / len(spots)
            lit = sum(1 for s in city.sites if s.state == "lit")
            placed.append((city.name, lat, lon, lit, len(city.sites)))
    if not placed:
        return None
    lats = [p[1] for p in placed]
    lons = [p[2] for p in placed]
    scale_x = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = (max(lons) - min(lons)) * scale_x
    span_y = max(lats) - min(lats)
    inner = WIDTH - 2 * PAD
    widest = max(span_x, span_y)
    unit = inner / widest if widest > 1e-9 else 0.0  # one place: drawn in the middle
    left = PAD + (inner - span_x * unit) / 2  # a box taller than wide is centred
    height = min(WIDTH, span_y * unit + 2 * PAD)
    most = max(p[4] for p in placed)
    points = tuple(
        CityPoint(
            name=name,
            x=round(left + (lon - min(lons)) * scale_x * unit, 1),
            y=round(PAD + (max(lats) - lat) * unit, 1),
            r=round(4 + 8 * math.sqrt(total / most), 1),
            lit=lit,
            total=total,
        )
        for name, lat, lon, lit, total in placed
    )
    return StaticMap(WIDTH, round(height, 1), points)
