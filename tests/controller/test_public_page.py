"""The public page's view model: which night is in front, its counts, the monuments by
city, the calendar, and what of a campaign reaches the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from controller.public_page import (
    AFTER_HOLD,
    CALENDAR_DAYS,
    LOOKBACK,
    Night,
    build_page,
    lightings,
    tel_uri,
    url_label,
)
from controller.public_when import Phase, Relative
from controller.web.page import too_soon_to_render
from schedules.model import Campaign, SiteCatalog

BXL = ZoneInfo("Europe/Brussels")
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {
                "id": "brussels",
                "name": {"en": "Brussels", "fr": "Bruxelles"},
                "timezone": "Europe/Brussels",
            },
            {"id": "arlon", "name": {"en": "Arlon"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.9,
                "lon": 4.3,
            },
            {
                "id": "manneken-pis",
                "city": "brussels",
                "name": {"en": "Manneken Pis", "fr": "Manneken-Pis"},
                "lat": 50.8,
                "lon": 4.3,
                "photo": {"src": "/static/photos/mp.jpg", "alt": {"en": "A small bronze boy"}},
            },
            {
                "id": "st-donat",
                "city": "arlon",
                "name": {"en": "Saint-Donat"},
                "lat": 49.6,
                "lon": 5.8,
            },
        ],
    }
)


def campaign(cid: str = "blue-heart", day: str = "2026-07-30", **extra: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "id": cid,
            "title": {"en": "Blue Heart", "fr": "Cœur bleu"},
            "cause": {"en": "Against trafficking"},
            "color": "#009EDB",
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": [day],
                    "start": {"at": "21:30"},
                    "end": {"at": "01:00"},
                }
            ],
            "call_to_action": {
                "text": {"en": "Call the helpline", "fr": "Appelez"},
                "helplines": [{"country": "BE", "number": "078/055.800", "hours": {"en": "24/7"}}],
                "url": "www.stophumantrafficking.be",
            },
            **extra,
        }
    )


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BXL)  # type: ignore[misc]


def status(states: dict[str, str], color: str = "#009EDB") -> dict[str, Any]:
    names = {"atomium": ("Atomium", "Brussels"), "manneken-pis": ("Manneken Pis", "Brussels")}
    names["st-donat"] = ("Saint-Donat", "Arlon")
    sites = []
    for site_id, state in states.items():
        item: dict[str, Any] = {"id": site_id, "name": names[site_id][0], "city": names[site_id][1]}
        item |= {"lat": 0.0, "lon": 0.0, "state": state, "color": color}
        if state == "lit":
            item["confirmed_at"] = "2026-07-30T19:30:04Z"
        sites.append(item)
    summary = {k: 0 for k in ("total", "lit", "pending", "unconfirmed", "offline", "scheduled")}
    summary |= {"off": 0, "total": len(sites), "lit": sum(s == "lit" for s in states.values())}
    return {"generated_at": "2026-07-30T19:31:00Z", "summary": summary, "sites": sites}


def page(now: datetime, campaigns: list[Campaign], states: dict[str, str], **kw: Any) -> Any:
    lit = lightings(CATALOG, campaigns, now - LOOKBACK, now + timedelta(days=CALENDAR_DAYS))
    return build_page(
        lang=kw.pop("lang", "en"),
        now=now,
        status=status(states),
        catalog=CATALOG,
        campaigns=campaigns,
        lit=lit,
        **kw,
    )


ALL_SCHEDULED = {"atomium": "scheduled", "manneken-pis": "scheduled", "st-donat": "scheduled"}


def test_before_the_night_the_campaign_is_in_front_with_its_day_word() -> None:
    model = page(local(2026, 7, 30, 9, 0), [campaign()], ALL_SCHEDULED)
    banner = model.banner
    assert banner is not None
    assert banner.phase is Phase.BEFORE
    assert banner.relative is Relative.THIS_EVENING
    assert banner.start == local(2026, 7, 30, 21, 30)
    assert banner.end == local(2026, 7, 31, 1, 0)
    assert (banner.total, banner.cities, banner.lit) == (3, 2, None)
    assert banner.campaign.title == "Blue Heart"
    assert banner.campaign.cause == "Against trafficking"


def test_during_the_night_counts_its_lit_monuments_from_the_status() -> None:
    states = {"atomium": "lit", "manneken-pis": "pending", "st-donat": "lit"}
    model = page(local(2026, 7, 30, 22, 0), [campaign()], states)
    assert model.banner is not None
    assert model.banner.phase is Phase.DURING
    assert model.banner.relative is Relative.TONIGHT
    assert model.banner.lit == 2


def test_after_the_night_the_final_count_stays_in_front_for_a_while() -> None:
    seen: list[Night] = []

    def final(night: Night) -> int | None:
        seen.append(night)
        return 3

    off = {"atomium": "off", "manneken-pis": "off", "st-donat": "off"}
    nights = [campaign(), campaign("next", day="2026-08-05")]
    model = page(local(2026, 7, 31, 9, 0), nights, off, final_count=final)
    assert model.banner is not None
    assert (model.banner.phase, model.banner.relative) == (Phase.AFTER, Relative.LAST_NIGHT)
    assert model.banner.lit == 3 and seen[0].campaign == "blue-heart"
    later = local(2026, 7, 31, 1, 0) + AFTER_HOLD + timedelta(minutes=1)
    model = page(later, nights, off, final_count=final)
    assert model.banner is not None
    assert model.banner.phase is Phase.BEFORE  # the next campaign's night, in front
    assert model.banner.start == local(2026, 8, 5, 21, 30)


def test_no_campaign_no_banner() -> None:
    model = page(local(2026, 9, 1, 12, 0), [campaign()], ALL_SCHEDULED)
    assert model.banner is None
    assert model.calendar == ()


def test_monuments_are_grouped_by_city_and_only_lit_carries_the_colour() -> None:
    states = {"atomium": "pending", "manneken-pis": "lit", "st-donat": "unconfirmed"}
    model = page(local(2026, 7, 30, 22, 0), [campaign()], states)
    assert [c.name for c in model.cities] == ["Arlon", "Brussels"]
    brussels = model.cities[1]
    assert [s.id for s in brussels.sites] == ["atomium", "manneken-pis"]
    atomium, manneken = brussels.sites
    assert atomium.color is None  # pending: never the campaign colour
    assert manneken.color == "#009EDB"
    assert manneken.confirmed_at is not None
    assert (manneken.photo_src, manneken.photo_alt) == (
        "/static/photos/mp.jpg",
        "A small bronze boy",
    )
    assert model.cities[0].sites[0].color is None


def test_the_calendar_lists_coming_lightings_with_cities_and_monuments() -> None:
    campaigns = [campaign(), campaign("later", day="2026-08-02")]
    model = page(local(2026, 7, 30, 9, 0), campaigns, ALL_SCHEDULED, lang="fr")
    assert [e.start for e in model.calendar] == [
        local(2026, 7, 30, 21, 30),
        local(2026, 8, 2, 21, 30),
    ]
    first = model.calendar[0]
    assert first.title == "Cœur bleu" and first.cause == "Against trafficking"  # en fallback
    assert first.color == "#009EDB"
    assert first.relative is Relative.THIS_EVENING
    assert first.cities == (("Arlon", ("Saint-Donat",)), ("Bruxelles", ("Atomium", "Manneken-Pis")))
    # once a night has ended it leaves the calendar
    model = page(local(2026, 7, 31, 9, 0), campaigns, ALL_SCHEDULED)
    assert [e.start for e in model.calendar] == [local(2026, 8, 2, 21, 30)]


def test_the_page_takes_only_the_public_fields_of_a_campaign() -> None:
    override = Campaign.model_validate(
        {
            "id": "storm-qx9",
            "title": {"en": "Storm"},
            "color": "#FF0000",
            "priority": 900,
            "override": True,
            "reason": "internal-reason-qx9",
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": ["2026-07-30"],
                    "start": {"at": "22:00"},
                    "end": {"at": "23:00"},
                }
            ],
        }
    )
    model = page(local(2026, 7, 30, 20, 0), [campaign(), override], ALL_SCHEDULED)
    assert "Storm" in {e.title for e in model.calendar}
    assert "qx9" not in repr(model)  # neither its id nor its reason


def test_a_call_to_action_in_the_visitors_language() -> None:
    model = page(local(2026, 7, 30, 9, 0), [campaign()], ALL_SCHEDULED, lang="fr")
    assert model.banner is not None
    call = model.banner.campaign.call
    assert call is not None
    assert call.text == "Appelez"
    assert call.url == "https://www.stophumantrafficking.be"
    assert call.url_label == "www.stophumantrafficking.be"
    (line,) = call.helplines
    assert (line.number, line.tel, line.hours) == ("078/055.800", "+3278055800", "24/7")


@pytest.mark.parametrize(
    ("number", "country", "tel"),
    [
        ("078/055.800", "BE", "+3278055800"),
        ("+32 78 05 58 00", "BE", "+3278055800"),
        ("0800 123", "XX", "0800123"),
        ("116 006", "BE", "116006"),
    ],
)
def test_tel_uri(number: str, country: str, tel: str) -> None:
    assert tel_uri(number, country) == tel


def test_url_label() -> None:
    assert url_label("https://www.example.org/") == "www.example.org"
    assert url_label("https://www.example.org/help/") == "www.example.org/help/"


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        build_page(
            lang="en",
            now=datetime(2026, 7, 30, 9, 0),
            status=None,
            catalog=CATALOG,
            campaigns=[],
            lit=[],
        )


def test_a_page_is_rendered_again_at_most_once_per_twenty_times_its_cost() -> None:
    """While only states move: every 5 s at the least, and a page that took 1.5 s to
    render (10,000 monuments) only every 30 s, so visitors never keep the controller's
    process busy rendering."""
    made = datetime(2026, 7, 30, 20, 0, tzinfo=UTC)
    cheap, dear = 0.01, 1.5
    assert too_soon_to_render(made, cheap, made + timedelta(seconds=4.9))
    assert not too_soon_to_render(made, cheap, made + timedelta(seconds=5))
    assert too_soon_to_render(made, dear, made + timedelta(seconds=29.9))
    assert not too_soon_to_render(made, dear, made + timedelta(seconds=30))
    assert not too_soon_to_render(made, dear, made - timedelta(seconds=1))  # clock stepped back
