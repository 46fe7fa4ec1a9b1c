"""The map's settings, the embeddable widget, each monument's own page and its shareable
picture, over real HTTP (uvicorn).

A real SQLite store with six Brussels monuments and a campaign lighting the Atomium;
the public view built from a snapshot in which the Atomium's device confirmed it (lit),
on a fake clock during the window.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from controller.metrics import Metrics
from controller.public_view import PublicView
from controller.settings import PublicSettings, SettingsError, load_settings
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.headers import tile_source
from devices.clock import FakeClock
from tests.controller.test_public import CATALOG, campaign, device, lit_device, snap
from tests.controller.test_public_view import NOW, make
from tests.controller.test_staff_api import serve

BASE = "https://illuminate.example.org"
SETTINGS = PublicSettings(
    map_tiles="https://{s}.tiles.example.org/{z}/{x}/{y}.png",
    map_attribution="© Tiles & Co <b>",
    embed_ancestors=("https://www.brussels.be", "https://*.gent.be"),
    base_url=BASE,
)
CARD = "/api/v1/public/monuments/atomium.png"


@dataclass
class Served:
    http: httpx.Client
    view: PublicView
    clock: FakeClock


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.campaigns.put(campaign(), NOW)
        view, _, clock = make(snap(lit_device()))
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=view,
            ready=dict,
            users=Users(sessions),
            public_settings=SETTINGS,
        )
        view.refresh()
        with serve(app) as http:
            yield Served(http, view, clock)


def policy(response: httpx.Response) -> dict[str, str]:
    parts = (
        p.strip().split(" ", 1) for p in response.headers["content-security-policy"].split(";")
    )
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


def test_the_page_allows_images_from_the_tile_host_only_and_carries_the_map(
    served: Served,
) -> None:
    page = served.http.get("/en/")
    assert page.status_code == 200
    assert policy(page)["img-src"] == "'self' data: https://*.tiles.example.org"
    assert policy(page)["frame-ancestors"] == "'none'"
    assert policy(served.http.get("/"))["img-src"] == "'self' data: https://*.tiles.example.org"
    for other in ("/static/app.js", "/api/v1/public/status", "/healthz"):
        assert policy(served.http.get(other))["img-src"] == "'self' data:", other
    html = page.text
    assert '<div id="map" class="map" role="region" aria-label="Map of the monuments' in html
    assert re.search(r'<div id="map"[^>]* hidden></div>', html), "no map without the script"
    assert 'src="/static/vendor/leaflet/leaflet.js"' in html
    assert 'src="/static/vendor/leaflet.markercluster/leaflet.markercluster.js"' in html
    assert '"tiles": "https://{s}.tiles.example.org/{z}/{x}/{y}.png"' in html
    # each monument links its own page and says where it stands
    assert '<a class="site-name" href="/en/monuments/atomium">Atomium</a>' in html
    assert re.search(
        r'id="site-atomium" data-state="lit" data-color="#009EDB" data-lat="50.8"', html
    )
    for path in ("vendor/leaflet/leaflet.js", "vendor/leaflet/leaflet.css", "map.js"):
        assert served.http.get(f"/static/{path}").status_code == 200, path
    assert "BSD" in served.http.get("/static/vendor/leaflet/LICENSE").text


def test_tile_addresses_are_checked_and_empty_means_no_tiles() -> None:
    assert tile_source("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == (
        "https://tile.openstreetmap.org"
    )
    assert tile_source("http://localhost:9/{z}/{x}/{y}.png") == "http://localhost:9"
    assert tile_source("") is None
    for bad in (
        "https://tile.example.org/tiles.png",
        "ftp://tile.example.org/{z}/{x}/{y}.png",
        "https://tile.example.org/{z}/{x}/{y}.png; script-src *",
        "https://a.{s}.example.org/{z}/{x}/{y}.png",
    ):
        with pytest.raises(SettingsError, match="map_tiles"):
            load_settings(None, public={"map_tiles": bad})
    with pytest.raises(SettingsError, match="embed_ancestors"):
        load_settings(None, public={"embed_ancestors": ["https://x.be; script-src *"]})


def test_the_widget_counts_the_city_and_is_the_one_page_that_may_be_framed(
    served: Served,
) -> None:
    embed = served.http.get("/embed/brussels")
    assert embed.status_code == 200
    assert embed.headers["content-language"] == "en"
    assert policy(embed)["frame-ancestors"] == "https://www.brussels.be https://*.gent.be"
    assert "x-frame-options" not in embed.headers
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", embed.text))
    assert "1 of 6 monuments confirmed lit" in text
    assert 'data-lit="1" data-total="6"' in embed.text
    assert '<a href="/en/" target="_blank" rel="noopener">See every monument</a>' in embed.text
    # its language: ?lang=, else Accept-Language
    fr = served.http.get("/embed/brussels", headers={"Accept-Language": "fr-BE"})
    assert fr.headers["content-language"] == "fr" and "Bruxelles" in fr.text
    assert "accept-language" in fr.headers["vary"].lower()
    nl = served.http.get(
        "/embed/brussels", params={"lang": "nl"}, headers={"Accept-Language": "fr"}
    )
    assert nl.headers["content-language"] == "nl" and 'href="/nl/"' in nl.text
    # an unknown city: the HTML 404, which may not be framed
    missing = served.http.get("/embed/atlantis")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert policy(missing)["frame-ancestors"] == "'none'"
    for other in ("/", "/en/", "/en/monuments/atomium", CARD):
        assert policy(served.http.get(other))["frame-ancestors"] == "'none'", other


def test_a_monument_has_its_own_page_with_its_state_and_card_tags(served: Served) -> None:
    page = served.http.get("/en/monuments/atomium")
    assert page.status_code == 200
    html = page.text
    assert '<h1 id="page-heading">Atomium</h1>' in html
    assert 'data-state="lit"' in html and '<span class="state-label">Lit</span>' in html
    # confirmed at 19:00Z, 21:00 in Brussels, by the device's own report
    assert re.search(r'confirmed at <time datetime="2025-06-10T19:00:00Z">21:00</time>', html)
    assert "Blue Heart" in html and 'aria-label="Campaign colour #009EDB"' in html
    meta = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">', html))
    assert meta["og:title"] == "Atomium: Lit"
    assert meta["og:url"] == f"{BASE}/en/monuments/atomium"
    assert meta["og:image"] == f"{BASE}{CARD}?lang=en"
    assert meta["og:description"] == "Atomium in Brussels: Lit. Blue Heart"
    assert meta["twitter:card"] == "summary_large_image"
    assert meta["twitter:image"] == meta["og:image"]
    assert (
        '<link rel="canonical" href="https://illuminate.example.org/en/monuments/atomium">' in html
    )
    assert '<link rel="alternate" hreflang="fr" href="/fr/monuments/atomium">' in html
    # a monument not lit says so in its language; an unknown one is an HTML 404
    fr = served.http.get("/fr/monuments/palace").text
    meta = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">', fr))
    assert meta["og:title"] == "palace (fr) : Éteint", meta["og:title"]
    assert "data-color" not in fr.split('id="monument"')[1].split(">")[0]
    missing = served.http.get("/en/monuments/no-such-site")
    assert missing.status_code == 404 and "Page not found" in missing.text


def test_the_card_is_a_png_of_the_state_cached_with_an_etag(served: Served) -> None:
    first = served.http.get(CARD, params={"lang": "en"})
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    assert "s-maxage=" in first.headers["cache-control"]
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and image.size == (1200, 630)
    assert image.getpixel((10, 300)) == (0, 158, 219), "a lit card carries the campaign colour"
    again = served.http.get(
        CARD, params={"lang": "en"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    # another language is another picture
    fr = served.http.get(CARD, params={"lang": "fr"})
    assert fr.headers["etag"] != first.headers["etag"]
    # an unlit monument: a neutral band, never the campaign colour
    palace = Image.open(io.BytesIO(served.http.get("/api/v1/public/monuments/palace.png").content))
    assert palace.getpixel((10, 300)) != (0, 158, 219)
    missing = served.http.get("/api/v1/public/monuments/no-such-site.png")
    assert missing.status_code == 404 and "no-such-site" in missing.json()["detail"]


def test_the_card_changes_with_the_state(tmp_path: Path) -> None:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.campaigns.put(campaign(), NOW)
        view, loader, clock = make(snap(device()))  # online, nothing applied: pending
        app = build_web(stores, clock, Metrics(), public=view, ready=dict, users=Users(sessions))
        with serve(app) as http:
            # before the first status: starting, not missing
            for path in (CARD, "/en/monuments/atomium", "/embed/brussels"):
                starting = http.get(path)
                assert starting.status_code == 503, path
                assert starting.headers["retry-after"] == "1", path
            view.refresh()
            pending = http.get(CARD)
            assert pending.status_code == 200
            loader.snapshot = snap(lit_device())
            view.rebuild()
            lit = http.get(CARD, headers={"If-None-Match": pending.headers["etag"]})
            assert lit.status_code == 200 and lit.headers["etag"] != pending.headers["etag"]
            # the default settings: OpenStreetMap's tiles, and the widget framed anywhere
            assert (
                "https://tile.openstreetmap.org"
                in http.get("/en/").headers["content-security-policy"]
            )
            assert policy(http.get("/embed/brussels"))["frame-ancestors"] == "*"
