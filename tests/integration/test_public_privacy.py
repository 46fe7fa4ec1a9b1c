"""What the public sees holds only allow-listed fields: a real controller (embedded broker),
real agents with distinctive ids and firmware, a technician with a distinctive name; then
every public output (the page, its script and style, the status JSON in every language,
the campaign's calendar, the city's Atom feed and the event stream, the city's widget,
a monument's own page and its picture, with their headers)
is searched for each of them, and for topics, hashes and addresses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from controller.app import Controller
from controller.registration import hash_generated_secret
from controller.store.base import NewDevice
from devices.agent import Agent
from tests.controller.test_staff_api import serve
from tests.integration.conftest import (
    DEADLINE,
    catalog,
    make_settings,
    wait_until,
    whole_second,
    window_campaign,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = {"qx7-alpha-unit": "site-01", "qx7-bravo-unit": "site-02", "qx7-charlie-unit": "site-03"}
PASSWORDS = {d: f"pw-{d}-Zk93" for d in DEVICES}
FIRMWARE = "fw-qx7-secret-4.2.1"
TECHNICIAN = "tamsin.quillfeather"
STATUS = "/api/v1/public/status"
TOP = {"generated_at", "summary", "sites"}
SUMMARY = {"total", "lit", "pending", "unconfirmed", "offline", "scheduled", "off"}
SITE = {
    "id",
    "name",
    "city",
    "lat",
    "lon",
    "state",
    "confirmed_at",
    "confirmed_by",
    "window",
    "color",
}
CALENDAR = "/api/v1/public/campaigns/blue-heart.ics"
FEED = "/api/v1/public/cities/brussels/feed.atom"
ALL_FEED = "/api/v1/public/feed.atom"
EVENTS = "/api/v1/public/events"
PAGES = ("/", "/en/", "/fr/", "/nl/", "/de/")
PAGE_DATA = {
    "lang",
    "locale",
    "api",
    "poll_ms",
    "zone",
    "phase",
    "start",
    "end",
    "night_sites",
    "total",
}
PAGE_DATA |= {"etag", "strings", "map"}
MAP = {"tiles", "attribution", "cluster", "zoom_in", "zoom_out"}
EMBED = "/embed/brussels"
MONUMENT = "/en/monuments/site-01"
CARD = "/api/v1/public/monuments/site-01.png"


@pytest.fixture
def public(tmp_path: Path) -> Iterator[tuple[httpx.Client, list[str]]]:
    controller = Controller(make_settings(tmp_path, None))
    controller.start()
    agents: list[Agent] = []
    try:
        now = datetime.now(UTC)
        stores = controller.stores
        stores.registry.import_catalog(catalog(3))
        hashes = {d: hash_generated_secret(PASSWORDS[d]) for d in DEVICES}
        stores.registry.add_devices([NewDevice(d, s, hashes[d]) for d, s in DEVICES.items()], now)
        assert controller.accounts is not None
        for device_id, password in PASSWORDS.items():
            controller.accounts.create(device_id, password)
        token = controller.users.add(TECHNICIAN, "technician", ["brussels"], now)
        opens = whole_second(1)
        stores.campaigns.put(window_campaign(opens, opens + timedelta(minutes=5)), now)
        controller.changed()
        address = controller.broker_address()
        for device_id in DEVICES:
            own = address.with_credentials(device_id, PASSWORDS[device_id])
            agent = Agent(device_id, own, firmware=FIRMWARE)
            agents.append(agent)
            agent.start()
        views = stores.reports.views
        assert wait_until(
            lambda: all(v.firmware == FIRMWARE for v in views().values()), DEADLINE
        ), "the controller knows every device's firmware"
        secrets = [
            *DEVICES,
            *PASSWORDS.values(),
            *hashes.values(),
            *(h.split("$")[-1] for h in hashes.values()),
            "qx7",
            FIRMWARE,
            TECHNICIAN,
            "quillfeather",
            token,
            controller.settings.broker.username,
            controller.settings.topics.root,
            "/plan",
            "/ack",
            "sha256$",
            "scrypt$",
            "127.0.0.1",
            str(controller.embedded.port if controller.embedded else ""),
        ]
        with serve(controller.web) as http:
            assert wait_until(
                lambda: (
                    http.get(STATUS).status_code == 200
                    and http.get(STATUS).json()["summary"]["lit"] == 3
                ),
                DEADLINE,
            )
            yield http, secrets
    finally:
        for agent in agents:
            agent.stop()
        controller.stop()


def test_public_outputs_hold_no_device_id_username_topic_hash_ip_firmware_or_name(
    public: tuple[httpx.Client, list[str]],
) -> None:
    http, secrets = public
    outputs: dict[str, httpx.Response] = {}
    for path in ("/", "/static/app.js", "/static/map.js", "/static/style.css", STATUS):
        outputs[path] = http.get(path)
    for lang in ("en", "fr", "nl", "de", "xx"):
        outputs[f"{STATUS}?lang={lang}"] = http.get(STATUS, params={"lang": lang})
        outputs[f"{FEED}?lang={lang}"] = http.get(FEED, params={"lang": lang})
    outputs[ALL_FEED] = http.get(ALL_FEED)
    outputs[CALENDAR] = http.get(CALENDAR)
    outputs[f"{CALENDAR}?city=brussels"] = http.get(CALENDAR, params={"city": "brussels"})
    for path in PAGES:
        outputs[path] = http.get(path)
    for lang in ("fr-BE", "nl", "de;q=0.5"):
        outputs[f"/ ({lang})"] = http.get("/", headers={"Accept-Language": lang})
    outputs["/xx/"] = http.get("/xx/", headers={"Accept": "text/html"})
    for lang in ("en", "fr", "nl", "de"):
        outputs[f"{EMBED}?lang={lang}"] = http.get(EMBED, params={"lang": lang})
        # its shared links are absolute: on the address the visitor asked for
        outputs[f"/{lang}/monuments/site-01"] = http.get(
            f"/{lang}/monuments/site-01", headers={"Host": "illuminate.example.org"}
        )
        outputs[f"{CARD}?lang={lang}"] = http.get(CARD, params={"lang": lang})
    texts = {path: response.text for path, response in outputs.items()}
    with http.stream("GET", EVENTS) as stream:
        lines = stream.iter_lines()
        first = [next(lines) for _ in range(5)]  # retry, blank, id, event, data
        texts[EVENTS] = "\n".join(first)
        outputs[EVENTS] = stream
    assert "event: status" in texts[EVENTS] and '"lit":3' in texts[EVENTS]
    assert "is lit in #009EDB" in texts[FEED + "?lang=en"], "the feed searched has entries"
    assert "BEGIN:VEVENT" in texts[CALENDAR]
    assert "3 of 3 monuments confirmed lit" in re.sub(r"<[^>]+>", "", texts[EMBED + "?lang=en"])
    assert 'data-state="lit"' in texts[MONUMENT]
    assert 'property="og:image" content="http://illuminate.example.org/' in texts[MONUMENT]
    assert outputs[CARD + "?lang=en"].content[:8] == b"\x89PNG\r\n\x1a\n"
    for path, response in outputs.items():
        assert response.status_code == (404 if path == "/xx/" else 200), path
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        seen = texts[path] + "\n" + headers
        for secret in secrets:
            assert secret not in seen, f"{secret!r} in {path}"
        if path.startswith(STATUS):
            body = json.loads(response.text)
            assert set(body) == TOP, path
            assert set(body["summary"]) == SUMMARY, path
            for site in body["sites"]:
                assert set(site) <= SITE, (path, site)
                assert set(site.get("window") or {}) <= {"start", "end"}, path
        if path in PAGES or path.startswith("/ ("):
            # the page shows what the status shows: its monuments and no other
            ids = {s["id"] for s in json.loads(outputs[STATUS].text)["sites"]}
            shown = set(re.findall(r'<li class="site[^"]*" id="site-([^"]+)"', response.text))
            assert shown == ids, path
            data = re.search(
                r'<script type="application/json" id="page-data">(.*?)</script>', response.text
            )
            assert data is not None, path
            page_data = json.loads(data.group(1))
            assert set(page_data) == PAGE_DATA, path
            assert set(page_data["map"]) == MAP, path
            assert set(page_data["night_sites"]) <= ids, path
    lit = json.loads(outputs[STATUS].text)["sites"]
    assert {s["state"] for s in lit} == {"lit"}, "the outputs searched show lit sites"
