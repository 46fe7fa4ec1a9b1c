"""The server-rendered public page over real HTTP (uvicorn): /, /{lang}/, language
negotiation, the HTML 404, and a page complete without JavaScript.

A real SQLite store with the demo's Belgian monuments and its Blue Heart campaign, the
public view on a fake clock (built on demand), and the app served by uvicorn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from controller.demo.runner import SITES_FILE, demo_campaign
from controller.last_known import FileLastKnown
from controller.metrics import Metrics
from controller.public_view import PublicView
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from devices.clock import FakeClock
from schedules.files import load_sites
from tests.controller.test_staff_api import serve

BRUSSELS = ZoneInfo("Europe/Brussels")
# 30 July 2026, 19:00 in Brussels; the window opens at 21:30 and lasts 3.5 hours.
NOW = datetime(2026, 7, 30, 19, 0, tzinfo=BRUSSELS).astimezone(UTC)
OPENS = datetime(2026, 7, 30, 21, 30, tzinfo=BRUSSELS)
CATALOG = load_sites(SITES_FILE)


@dataclass
class Page:
    http: httpx.Client
    view: PublicView
    clock: FakeClock


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        clock = FakeClock(NOW)
        stores.campaigns.put(demo_campaign(OPENS, timedelta(hours=3, minutes=30), BRUSSELS), NOW)
        view = PublicView(
            stores.snapshot, clock, grace=timedelta(seconds=30), upcoming=timedelta(hours=24)
        )
        app = build_web(stores, clock, Metrics(), public=view, ready=dict, users=Users(sessions))
        with serve(app) as http:
            yield Page(http, view, clock)


def test_before_the_first_status_the_page_says_so_with_a_503(page: Page) -> None:
    response = page.http.get("/en/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "not ready yet" in response.text


def test_each_language_is_its_own_page_complete_without_javascript(page: Page) -> None:
    page.view.rebuild()
    en = page.http.get("/en/")
    assert en.status_code == 200
    assert en.headers["content-type"].startswith("text/html")
    assert en.headers["content-language"] == "en"
    html = en.text
    assert '<html lang="en"' in html
    for lang in ("en", "fr", "nl", "de"):
        assert f'<link rel="alternate" hreflang="{lang}" href="/{lang}/">' in html
    assert '<link rel="alternate" hreflang="x-default" href="/">' in html
    assert 'type="application/atom+xml" href="/api/v1/public/feed.atom?lang=en"' in html
    # every monument, in its city, with its state in words (no script has run)
    assert html.count('data-state="scheduled"') == len(CATALOG.sites)
    for site in CATALOG.sites:
        assert f'id="site-{site.id}"' in html
    assert html.count('class="city"') == len(CATALOG.cities)
    assert 'data-city="Brussels"' in html
    # campaign, cause, call to action, legend, calendar
    assert "Blue Heart: World Day Against Trafficking in Persons" in html
    assert "Against trafficking in human beings" in html
    assert 'href="tel:+3278055800">078/055.800</a>' in html
    assert 'href="https://www.stophumantrafficking.be"' in html
    assert 'id="legend"' in html and html.count('class="legend-item') == 6
    assert 'id="upcoming"' in html and 'class="lighting"' in html
    assert (
        '<a href="/api/v1/public/campaigns/demo-blue-heart.ics?lang=en" type="text/calendar">'
        "Blue Heart: World Day Against Trafficking in Persons: add these lightings to your "
        "calendar</a>"
    ) in html
    # a map without the script: each city placed, with how far it is lit, in words
    noscript = html[html.index("<noscript>") : html.index("</noscript>")]
    assert '<svg viewBox="0 0 400' in noscript and 'role="img"' in noscript
    assert noscript.count('class="map-static-city') == len(CATALOG.cities)
    assert re.search(r">Brussels: 0 of \d+ lit</text>", noscript), noscript[:500]
    # 19:00 on the day: the window is tonight, and the countdown says 2 h 30 min
    assert 'Lights on tonight at <time datetime="2026-07-30T19:30:00Z">21:30</time>.' in html
    assert '<span id="countdown" data-to="2026-07-30T19:30:00Z">2 h 30 min</span>' in html

    fr = page.http.get("/fr/")
    assert fr.headers["content-language"] == "fr"
    assert '<html lang="fr"' in fr.text
    assert "Cœur bleu" in fr.text and "Contre la traite des êtres humains" in fr.text
    assert "Illumination ce soir à" in fr.text
    assert "Programmé" in fr.text and 'data-city="Bruxelles"' in fr.text
    assert "Signification des états" in fr.text
    assert re.search(r">Bruxelles: 0 sur \d+ ", fr.text), "the French map says it in French"
    de = page.http.get("/de/")
    assert "Blaues Herz" in de.text and "Lüttich" in de.text


def test_the_page_data_gives_the_script_its_strings_and_the_json_stays_codes(page: Page) -> None:
    page.view.rebuild()
    html = page.http.get("/nl/").text
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html)
    assert found is not None
    data = json.loads(found.group(1))
    assert data["lang"] == "nl"
    assert data["api"] == "/api/v1/public/status?lang=nl"
    assert data["strings"]["states"]["lit"] == "Verlicht"
    assert data["phase"] == "before"
    assert len(data["night_sites"]) == len(CATALOG.sites)
    status = page.http.get("/api/v1/public/status", params={"lang": "nl"}).json()
    assert {s["state"] for s in status["sites"]} == {"scheduled"}


def test_root_negotiates_the_language_and_varies_on_it(page: Page) -> None:
    page.view.rebuild()
    for header, lang in (
        ("fr-BE,fr;q=0.9,en;q=0.5", "fr"),
        ("nl-BE", "nl"),
        ("es, de;q=0.4", "de"),
        ("en;q=0.1, nl;q=0.8", "nl"),
        ("ja", "en"),
        ("", "en"),
    ):
        response = page.http.get("/", headers={"Accept-Language": header})
        assert response.status_code == 200, header
        assert response.headers["content-language"] == lang, header
        assert "accept-language" in response.headers["vary"].lower()
        assert f'<html lang="{lang}"' in response.text, header
    moved = page.http.get("/fr", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/fr/"


def test_an_unknown_language_is_an_html_404(page: Page) -> None:
    page.view.rebuild()
    response = page.http.get("/xx/", headers={"Accept-Language": "de"})  # no Accept
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Seite nicht gefunden" in response.text
    assert '<html lang="de"' in response.text
    other = page.http.get("/no-such-page", headers={"Accept": "text/html"}, follow_redirects=True)
    assert other.status_code == 404 and "<html" in other.text
    api = page.http.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json()["detail"] == "Not Found"


def test_during_and_after_the_banner_follows_the_phase(page: Page) -> None:
    page.clock.advance(timedelta(hours=3))  # 22:00: open
    page.view.rebuild()
    html = page.http.get("/en/").text
    assert 'data-phase="during"' in html
    assert "Lit now, until" in html
    assert re.search(r'<span id="night-lit">0</span> of 30 monuments confirmed lit\s+in 15', html)
    page.clock.advance(timedelta(hours=12))  # 10:00 the next day
    page.view.rebuild()
    html = page.http.get("/en/").text
    assert 'data-phase="after"' in html
    assert "Last night:" in html and "tonight" not in html.lower()


def test_the_page_is_sent_gzipped_to_those_who_take_it(page: Page) -> None:
    page.view.rebuild()
    plain = page.http.get("/en/", headers={"Accept-Encoding": "identity"})
    packed = page.http.get("/en/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.text == plain.text  # httpx unpacks it
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert page.http.head("/en/").status_code == 200


def test_a_page_is_rendered_again_at_most_every_few_seconds_while_only_states_move(
    page: Page,
) -> None:
    grace_ends = OPENS.astimezone(UTC) + timedelta(seconds=30)  # no device: unconfirmed then
    page.clock.advance(grace_ends - timedelta(seconds=2) - NOW)
    page.view.rebuild()
    assert page.http.get("/en/").text.count('data-state="pending"') == len(CATALOG.sites)
    page.clock.advance(timedelta(seconds=3))
    page.view.rebuild()
    status = page.http.get("/api/v1/public/status").json()
    assert status["summary"]["unconfirmed"] == len(CATALOG.sites)
    # the page is 3 s old: kept (the script follows the status meanwhile)
    assert page.http.get("/en/").text.count('data-state="pending"') == len(CATALOG.sites)
    page.clock.advance(timedelta(seconds=3))
    assert page.http.get("/en/").text.count('data-state="unconfirmed"') == len(CATALOG.sites)


def test_after_a_restart_the_page_says_it_shows_the_last_known_status(tmp_path: Path) -> None:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        clock = FakeClock(NOW)
        stores.campaigns.put(demo_campaign(OPENS, timedelta(hours=3), BRUSSELS), NOW)
        kept = FileLastKnown(tmp_path / "public-status.json")

        def view() -> PublicView:
            return PublicView(
                stores.snapshot,
                clock,
                grace=timedelta(seconds=30),
                upcoming=timedelta(hours=24),
                last_known=kept,
            )

        before = view()
        before.rebuild()
        before.stop()  # saves the status, current until now
        restarted = view()  # not built yet: it serves the copy
        app = build_web(
            stores, clock, Metrics(), public=restarted, ready=dict, users=Users(sessions)
        )
        with serve(app) as http:
            html = http.get("/en/").text
    assert html.count('data-state="scheduled"') == len(CATALOG.sites)
    warning = re.search(
        r'<p id="stale-warning" class="stale" data-stale="last-known">(.*?)</p>', html
    )
    assert warning is not None, "the page shows the warning itself, without the script"
    assert "The service is restarting" in warning.group(1)
    assert '<time id="as-of" datetime="2026-07-30T17:00:00Z">' in warning.group(1)


def test_at_nine_in_the_morning_nothing_says_tonight(page: Page) -> None:
    page.clock.jump(datetime(2026, 7, 30, 9, 0, tzinfo=BRUSSELS) - NOW)  # back to 09:00
    page.view.rebuild()
    html = page.http.get("/en/").text
    assert "Lights on this evening at" in html
    assert "tonight" not in html.lower()
    assert 'data-to="2026-07-30T19:30:00Z">12 h 30 min</span>' in html
