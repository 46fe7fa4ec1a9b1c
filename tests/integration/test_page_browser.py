"""The public page in a real browser: headless Chromium, driven over the DevTools
protocol, against a real controller, Mosquitto and simulated devices, served by uvicorn.

One browser session covers the page: `/en/` rendered by the server shows a monument
pending (its device, driven by the test, holds back its acknowledgement), and once the
device confirms, the script turns it lit without a reload;
the campaign, its call to action and the legend are there; the aggregate count is the
only live region; `/fr/` is in French; with scripts off the list is complete; and
screenshots at desktop and phone sizes are kept in `tmp/artefacts/public-page/`. The map
beside the list (its tiles on a closed port, so they never load) clusters the three
monuments with their counts, follows the live states, and its markers say each state
in words; with scripts off there is no map.

Chromium must be installed (`make browser`); the test fails, never skips, without it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from controller.demo.runner import BLUE_HEART_CALL
from devices.protocol import Ack, Plan, Stage, Topics, decode, encode
from devices.simulator import Fleet, FleetSpec
from schedules.model import Campaign
from tests.integration.conftest import (
    DEADLINE,
    Rig,
    catalog,
    devices_for,
    wait_until,
    whole_second,
    window_campaign,
)
from tests.support.cdp import Browser, chromium, chromium_binary
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto, free_port
from tests.support.peer import Peer

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SITES = 3
OPENS_IN_S = 3600  # the window first set: an hour away, however slow the machine
GRACE_S = 120.0  # the held-back device stays pending, never unconfirmed, during the test
STATUS = "/api/v1/public/status"
ARTEFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artefacts" / "public-page"
DESKTOP = (1280, 900)
PHONE = (390, 844)


def campaign(opens_in_s: float, length_s: float) -> Campaign:
    opens = whole_second(opens_in_s)
    base = window_campaign(opens, opens + timedelta(seconds=length_s))
    return Campaign.model_validate(
        {
            **base.model_dump(mode="json"),
            "title": {"en": "Blue Heart", "fr": "Cœur bleu"},
            "cause": {"en": "Against trafficking in human beings", "fr": "Contre la traite"},
            "call_to_action": BLUE_HEART_CALL,
        }
    )


@dataclass
class Served:
    rig: Rig
    url: str
    http: httpx.Client
    mosquitto: Mosquitto


class HandDevice:
    """Monument 1's device, driven by the test: online, takes its plan, and reports the
    opening step applied only when `confirm` is called."""

    def __init__(self, peer: Peer, device_id: str) -> None:
        self.peer = peer
        self.topics = Topics()
        self.device_id = device_id
        peer.subscribe(self.topics.plan(device_id))
        birth = orjson.dumps({"v": 1, "online": True, "firmware": "hand-1"})
        peer.publish_all([(self.topics.status(device_id), birth, True)])

    def plan(self) -> Plan:
        topic = self.topics.plan(self.device_id)
        items = self.peer.messages.wait_for(lambda ms: any(m.topic == topic for m in ms))
        return decode(Plan, [m for m in items if m.topic == topic][-1].payload)

    def confirm(self) -> None:
        plan = self.plan()
        step = next(s for s in plan.steps if s.state.on)
        ack = Ack(
            version=plan.version,
            stage=Stage.APPLIED,
            step_at=step.at,
            applied_at=datetime.now(UTC),
            state=step.state,
        )
        self.peer.publish_all([(self.topics.ack(self.device_id), encode(ack), False)])


@pytest.fixture
def served(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Served]:
    from controller.settings import load_settings

    devices = devices_for(SITES)
    mosquitto.add_users({d.id: d.password for d in devices})
    settings = load_settings(
        None,
        data_dir=tmp_path,
        broker={"url": mosquitto.url, "username": CONTROLLER_USER, "password": CONTROLLER_PASSWORD},
        control={"grace_s": GRACE_S, "tick_s": 1.0, "horizon_h": 48},
        # the map's tiles cannot load: a closed port (the page must not mind)
        public={"map_tiles": f"http://localhost:{free_port()}/{{z}}/{{x}}/{{y}}.png"},
    )
    rig = Rig(settings, catalog(SITES), devices)
    controller = rig.start_controller()
    controller.web.state.public_page.poll_ms = 1000  # the page asks every second
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(controller.web, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        assert wait_until(lambda: server.started, timeout=DEADLINE)
        yield Served(rig, f"http://127.0.0.1:{port}", http, mosquitto)
    finally:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)
        rig.stop()


def states(browser: Browser) -> dict[str, str]:
    found: dict[str, str] = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-state]')]"
        ".map(n => [n.id, n.getAttribute('data-state')]))"
    )
    return found


def text(browser: Browser, selector: str) -> str:
    value = browser.evaluate(
        f"(n => n ? n.textContent.replace(/\\s+/g, ' ').trim() : null)"
        f"(document.querySelector({selector!r}))"
    )
    assert value is not None, f"no {selector} on the page"
    return str(value)


def test_the_public_page_in_chromium(served: Served, tmp_path: Path) -> None:
    if chromium_binary() is None:
        pytest.fail(
            "The browser test needs Chromium (Debian package 'chromium'). "
            "Run `make browser` (as root it installs it), or: sudo apt-get install chromium",
            pytrace=False,
        )
    rig = served.rig
    rig.register(campaign(opens_in_s=OPENS_IN_S, length_s=600))
    assert rig.controller is not None
    rig.fleet = Fleet(
        FleetSpec(devices=rig.devices[1:]),
        rig.controller.broker_address(),
        topics=rig.settings.topics,
    )
    rig.fleet.start()
    first = rig.devices[0]
    with Peer(served.mosquitto.port, first.id, first.password, client_id=first.id) as peer:
        hand = HandDevice(peer, first.id)
        browse(served, hand, tmp_path)


def browse(served: Served, hand: HandDevice, tmp_path: Path) -> None:
    rig = served.rig
    # before the window: every monument scheduled
    assert wait_until(
        lambda: set(rig.served().values()) == {"scheduled"} and len(rig.served()) == SITES,
        timeout=DEADLINE,
    ), rig.served()

    with chromium(tmp_path / "chromium") as browser:
        browser.screen(*DESKTOP)
        browser.navigate(served.url + "/en/")
        browser.evaluate("window.sameDocument = true")
        assert browser.evaluate("document.querySelector('#campaign').dataset.phase") == "before"
        # an hour away: "tonight" in the evening or the small hours, else "today" or
        # "this evening"; the server's countdown, then the script's
        phase_line = text(browser, "#phase-line")
        assert re.match(
            r"Lights on (tonight|today|this evening) at .+\. In (1 h|59 min)\.$", phase_line
        ), phase_line
        browser.evaluate(
            "document.querySelector('#countdown').dataset.to ="
            " new Date(Date.now() + 90500).toISOString()"
        )
        browser.wait_for("document.querySelector('#countdown').textContent === '2 min'", 10)
        assert set(states(browser).values()) == {"scheduled"}
        # the map beside the list: the three monuments, close together, in one cluster
        browser.wait_for("!!document.querySelector('#map .map-cluster[data-count=\"3\"]')", 10)
        assert browser.evaluate("document.querySelector('#map').hidden") is False
        assert text(browser, "#map .map-cluster") == "3 0 of 3 lit"
        assert (
            browser.evaluate(
                "document.querySelector('#map .leaflet-marker-pane').getAttribute('aria-hidden')"
            )
            == "true"
        )
        assert (
            browser.evaluate(
                "document.querySelectorAll('#map [tabindex]:not(.leaflet-container)').length"
            )
            == 0
        )
        browser.screenshot(ARTEFACTS / "en-before-desktop.png")

        # the coordinator moves the window to now: the script sees the night begin in the
        # status, fetches the page again (no reload) and follows the status: two
        # monuments confirmed, the first one pending (its device holds back)
        controller = rig.controller
        assert controller is not None
        controller.stores.campaigns.put(campaign(opens_in_s=2, length_s=600), datetime.now(UTC))
        controller.changed()
        browser.wait_for("document.querySelector('#campaign').dataset.phase === 'during'", DEADLINE)
        browser.wait_for(
            "document.querySelector('#site-site-02').dataset.state === 'lit'"
            " && document.querySelector('#site-site-03').dataset.state === 'lit'",
            DEADLINE,
        )
        assert browser.evaluate("window.sameDocument") is True
        assert states(browser) == {
            "site-site-01": "pending",
            "site-site-02": "lit",
            "site-site-03": "lit",
        }
        assert browser.evaluate("document.documentElement.lang") == "en"
        assert text(browser, "#page-heading") == "Blue Heart"
        assert text(browser, ".cause") == "Against trafficking in human beings"
        assert "Lit now, until" in text(browser, "#phase-line")
        call = text(browser, "#call-to-action")
        assert "078/055.800" in call and "www.stophumantrafficking.be" in call
        assert browser.evaluate("document.querySelector('.helpline').href") == "tel:+3278055800"
        assert browser.evaluate("document.querySelectorAll('#legend .legend-item').length") == 6
        assert browser.evaluate("document.querySelectorAll('[aria-live]').length") == 1
        assert browser.evaluate("document.querySelector('[aria-live]').id") == "summary"
        # a lit monument is drawn in the campaign colour, and says so in words
        lit = "#site-site-02"
        assert text(browser, f"{lit} .state-label") == "Lit"
        assert re.fullmatch(r"confirmed at \d\d:\d\d", text(browser, f"{lit} .confirmed"))
        # how it was confirmed, in words: the simulated agents have no light sensor
        assert (
            browser.evaluate(f"document.querySelector('{lit} .confirmed-by').dataset.confirmedBy")
            == "echo"
        )
        assert text(browser, f"{lit} .confirmed-by") == "by the device's own report"
        border = browser.evaluate(
            f"getComputedStyle(document.querySelector({lit!r})).borderLeftColor"
        )
        assert border == "rgb(0, 158, 219)"  # #009EDB, set by the script from data-color
        assert text(browser, "#site-site-01 .state-label") == "Pending"
        assert not browser.evaluate("document.querySelector('#site-site-01 .swatch')")
        # the map followed the page's new rendering: two of the three lit
        browser.wait_for("!!document.querySelector('#map .map-cluster[data-lit=\"2\"]')", 10)
        assert text(browser, "#map .map-cluster") == "3 2 of 3 lit"

        # its device confirms: lit, without a reload
        hand.confirm()
        browser.wait_for(
            "document.querySelector('#site-site-01').dataset.state === 'lit'", DEADLINE
        )
        assert browser.evaluate("window.sameDocument") is True
        assert text(browser, "#site-site-01 .state-label") == "Lit"
        assert browser.evaluate("!!document.querySelector('#site-site-01 .swatch')")
        assert browser.evaluate("!!document.querySelector('#site-site-01 .badge svg.state-icon')")
        browser.wait_for("document.querySelector('#count-lit').textContent === '3'", DEADLINE)
        assert text(browser, "#summary") == "3 of 3 monuments lit"
        assert text(browser, "#night-lit") == "3"
        assert browser.evaluate("document.querySelector('#stale-warning').hidden") is True
        # the map follows the polling too; opened, its markers say the state in words
        browser.wait_for("!!document.querySelector('#map .map-cluster[data-lit=\"3\"]')", 10)
        assert text(browser, "#map .map-cluster") == "3 3 of 3 lit"
        browser.evaluate(
            "document.querySelector('#map .map-cluster')"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
        )
        browser.wait_for("document.querySelectorAll('#map .map-marker').length === 3", 10)
        markers = browser.evaluate(
            "[...document.querySelectorAll('#map .map-marker')].map(m => [m.dataset.site,"
            " m.dataset.state, m.textContent.trim(), m.dataset.color || null,"
            " !!m.querySelector('svg.state-icon')])"
        )
        assert sorted(markers) == [
            [f"site-0{i}", "lit", "Lit", "#009EDB", True] for i in range(1, SITES + 1)
        ], markers
        # the tiles could not load, and nothing else minds
        assert browser.evaluate("document.querySelectorAll('#map img.leaflet-tile').length") > 0
        assert text(browser, "#summary") == "3 of 3 monuments lit"

        desktop = browser.screenshot(ARTEFACTS / "en-desktop.png")
        browser.screen(*PHONE, mobile=True)
        phone = browser.screenshot(ARTEFACTS / "en-phone.png")
        dark = [{"name": "prefers-color-scheme", "value": "dark"}]
        browser.call("Emulation.setEmulatedMedia", features=dark)
        browser.screenshot(ARTEFACTS / "en-phone-dark.png")
        browser.call("Emulation.setEmulatedMedia", features=[])
        for shot in (desktop, phone):
            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, shot

        browser.screen(*DESKTOP)
        browser.navigate(served.url + "/fr/")
        assert browser.evaluate("document.documentElement.lang") == "fr"
        assert text(browser, "#page-heading") == "Cœur bleu"
        assert text(browser, "#site-site-01 .state-label") == "Illuminé"
        assert text(browser, "#site-site-02 .confirmed-by") == "par le rapport du dispositif"
        assert text(browser, "#legend-heading") == "Signification des états"
        assert "Appelez la ligne d'aide" in text(browser, "#call-to-action")
        assert text(browser, "#summary") == "3 sur 3 monuments illuminés"
        browser.screenshot(ARTEFACTS / "fr-desktop.png")

        # scripts off: the server's page alone is complete (fetched anew, not the copy
        # the browser may keep for the page's max-age; rendered again once its few
        # seconds are up, as `controller/web/page.py` keeps it)
        assert wait_until(
            lambda: served.http.get("/en/").text.count('data-state="lit"') == SITES, DEADLINE
        )
        browser.scripts(enabled=False)
        browser.call("Network.enable")
        browser.call("Network.setCacheDisabled", cacheDisabled=True)
        browser.navigate(served.url + "/en/")
        html = browser.html()
        assert browser.evaluate("window.sameDocument") is None  # a fresh document
        shown = dict(re.findall(r'id="(site-site-\d+)" data-state="(\w+)"', html))
        assert shown == {f"site-site-0{i}": "lit" for i in range(1, SITES + 1)}
        assert 'id="legend"' in html and 'id="call-to-action"' in html
        assert "3 of 3 monuments lit" in re.sub(r"<[^>]+>", "", html)
        assert browser.evaluate("document.querySelector('#map').hidden") is True  # no map
        browser.screen(*PHONE, mobile=True)
        browser.screenshot(ARTEFACTS / "en-phone-no-script.png")

    private = served.http.get("/en/").text
    for secret in ("dev-0", "pw-0", "illuminate/v1", CONTROLLER_PASSWORD, "127.0.0.1"):
        assert secret not in private, f"{secret!r} leaked into the page"
