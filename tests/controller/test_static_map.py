"""The map without the script (controller/static_map.py): where the cities go, and how
far each is lit."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from controller.public_page import CityView, SiteView
from controller.static_map import PAD, WIDTH, static_map

ZONE = ZoneInfo("Europe/Brussels")


def site(state: str, lat: float | None, lon: float | None) -> SiteView:
    return SiteView("s", "S", state, None, None, None, None, lat=lat, lon=lon)


def test_cities_keep_their_places_and_say_how_far_they_are_lit() -> None:
    brussels = CityView(
        "Brussels",
        ZONE,
        (site("lit", 50.85, 4.35), site("lit", 50.84, 4.36), site("off", 50.85, 4.34)),
    )
    ostend = CityView("Ostend", ZONE, (site("lit", 51.23, 2.92),))
    liege = CityView("Liège", ZONE, (site("pending", 50.63, 5.57),))
    nowhere = CityView("Nowhere", ZONE, (site("lit", None, None),))
    drawn = static_map([brussels, ostend, liege, nowhere])
    assert drawn is not None
    points = {p.name: p for p in drawn.cities}
    assert set(points) == {"Brussels", "Ostend", "Liège"}  # none without coordinates
    west, middle, east = points["Ostend"], points["Brussels"], points["Liège"]
    assert west.x < middle.x < east.x  # west to east
    assert west.y < middle.y < east.y  # north to south (Ostend is the northernmost)
    assert (middle.lit, middle.total) == (2, 3) and (east.lit, east.total) == (0, 1)
    assert middle.r > west.r  # more monuments, a bigger point
    for p in drawn.cities:
        assert PAD <= p.x <= WIDTH - PAD + 0.1 and PAD <= p.y <= drawn.height - PAD + 0.1


def test_no_placed_city_no_map() -> None:
    assert static_map([]) is None
    assert static_map([CityView("Nowhere", ZONE, (site("lit", None, None),))]) is None


def test_one_city_is_drawn_in_the_middle_of_its_box() -> None:
    drawn = static_map([CityView("Bruges", ZONE, (site("lit", 51.2, 3.2),))])
    assert drawn is not None
    (point,) = drawn.cities
    assert (point.x, point.y) == (WIDTH / 2, PAD) and drawn.height == 2 * PAD
