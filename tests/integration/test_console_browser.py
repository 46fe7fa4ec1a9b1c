"""The staff console in a real browser: headless Chromium (Debian's), driven over the
DevTools protocol, against a real controller, a private Mosquitto with the
dynamic-security plugin (the controller makes each device's broker account) and a real
device agent (simulated fixture).

One browser session (`tests/support/cdp.py`): a technician signs in, registers a
device (the password is read from the page, as a technician would copy it), the agent
is started with that password, and the technician test-flashes it and sees the round
trip; then signs out, and a coordinator signs in, uploads a campaign with a bad time,
sees the fault next to its line, fixes it and reads the timeline's public preview.
Screenshots go to the test's tmp folder (`artefacts/`).

Chromium must be installed (`make browser`); the test fails, never skips, without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.app import Controller
from controller.settings import load_settings
from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from schedules.model import SiteCatalog
from tests.controller.test_console import BAD_YAML
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until
from tests.support.cdp import Browser, chromium, chromium_binary
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    DYNSEC_ADMIN_PASSWORD,
    DYNSEC_ADMIN_USER,
    Mosquitto,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICE = "atomium-ctl"
SITES = SiteCatalog.model_validate(
    {
        "cities": [{"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.8949,
                "lon": 4.3415,
            }
        ],
    }
)


# ---- the page, through the shared DevTools-protocol driver ----


class Page:
    """A console page in the browser: navigate, fill fields, click a form's button."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    def goto(self, url: str) -> None:
        self.browser.navigate(url)

    def evaluate(self, expression: str) -> Any:
        return self.browser.evaluate(expression)

    def submit_by(self, button_id: str) -> None:
        """Click a form's button and wait for the page the form leads to."""
        self.browser.events.clear()
        self.evaluate(f"document.getElementById({json.dumps(button_id)}).click()")
        self.browser.wait_event("Page.loadEventFired", timeout_s=DEADLINE)

    def fill(self, element_id: str, value: str) -> None:
        self.evaluate(
            f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}"
        )

    def text(self, selector: str) -> str:
        found = self.evaluate(
            f"(e => e ? e.textContent : null)(document.querySelector({json.dumps(selector)}))"
        )
        assert found is not None, (
            f"no {selector} on {self.evaluate('location.href')}: "
            f"{self.evaluate('document.body.innerText')}"
        )
        return str(found)

    def screenshot(self, path: Path) -> None:
        self.browser.screenshot(path)


# ---- the rig ----


@pytest.fixture
def controller(tmp_path: Path, dynsec_mosquitto: Mosquitto) -> Iterator[Controller]:
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        broker={
            "url": dynsec_mosquitto.url,
            "username": CONTROLLER_USER,
            "password": CONTROLLER_PASSWORD,
            "dynsec_admin_username": DYNSEC_ADMIN_USER,
            "dynsec_admin_password": DYNSEC_ADMIN_PASSWORD,
        },
        control={"tick_s": 1.0},
    )
    running = Controller(settings)
    try:
        running.start()
        assert running.broker is not None and running.broker.wait_connected(DEADLINE)
        running.stores.registry.import_catalog(SITES)
        yield running
    finally:
        running.stop()


def test_a_technician_registers_and_flashes_a_device_and_a_coordinator_sees_a_fault(
    tmp_path: Path, controller: Controller, dynsec_mosquitto: Mosquitto
) -> None:
    artefacts = tmp_path / "artefacts"
    now = controller.clock()
    tom = controller.users.add("tom", "technician", ["brussels"], now)
    cora = controller.users.add("cora", "coordinator", [], now)
    agent: Agent | None = None
    if chromium_binary() is None:
        pytest.fail(
            "The browser test needs Chromium (Debian package 'chromium'). "
            "Run `make browser` (as root it installs it), or: sudo apt-get install chromium",
            pytrace=False,
        )
    with serve(controller.web) as http, chromium(tmp_path / "chromium") as browser:
        browser.screen(1200, 900)
        page = Page(browser)
        base = str(http.base_url).rstrip("/")

        # a technician signs in
        page.goto(f"{base}/console")
        assert page.evaluate("location.pathname") == "/console/sign-in"
        page.fill("token", tom)
        page.submit_by("sign-in")
        assert "tom (technician: brussels)" in page.text("#who"), page.text("main")

        # registers a device: its password is on the page, once
        page.goto(f"{base}/console/devices")
        page.fill("device-id", DEVICE)
        page.submit_by("register")
        password = page.text("#password")
        snippet = page.text("#snippet")
        page.screenshot(artefacts / "1-registered.png")
        assert f"--id {DEVICE} --password-file {DEVICE}.pw" in snippet
        assert f"--broker {dynsec_mosquitto.url}" in snippet
        page.evaluate("document.getElementById('copy-snippet').click()")
        assert wait_until(
            lambda: page.evaluate("!document.querySelector('.copied').hidden"), timeout=DEADLINE
        ), "the copy button did nothing"

        # the device starts with that password and connects
        agent = Agent(
            DEVICE,
            BrokerAddress.parse(dynsec_mosquitto.url),
            password=password,
            fixture=SimulatedFixture(),
            clock_synced=lambda: True,
        )
        agent.start()
        try:
            assert wait_until(
                lambda: (
                    (view := controller.stores.reports.views([DEVICE]).get(DEVICE)) is not None
                    and view.online is True
                ),
                timeout=DEADLINE,
            ), "the agent did not come online"

            # the technician flashes it and sees the round trip
            page.goto(f"{base}/console/devices/{DEVICE}")
            assert page.text("#online") == "online"
            page.fill("seconds", "3")
            page.submit_by("test-flash")
            result = page.evaluate("document.getElementById('test-result').dataset.result")
            page.screenshot(artefacts / "2-test-flash.png")
            assert result == "applied", page.text("#test-result")
            assert page.text("#round-trip").endswith(" ms")
        finally:
            agent.stop()

        # signs out; a coordinator signs in and uploads a campaign with a bad time
        page.submit_by("sign-out")
        assert page.evaluate("location.pathname") == "/console/sign-in"
        page.fill("token", cora)
        page.submit_by("sign-in")
        page.goto(f"{base}/console/campaigns")
        page.fill("yaml", BAD_YAML)
        page.submit_by("save-campaign")
        page.screenshot(artefacts / "3-campaign-fault.png")
        fault = page.text('tr.fault[data-path="windows[0].start.at"]')
        assert "line 8" in fault and "time must be HH:MM" in fault
        # the fault's row comes right after the line it is about
        before = page.evaluate(
            "document.querySelector('tr.fault[data-path=\"windows[0].start.at\"]')"
            ".previousElementSibling.textContent"
        )
        assert before.split() == ["8", "start:", "{at:", '"25:00"}']
        assert controller.stores.campaigns.record("blue-heart") is None

        # fixed, it is stored; the timeline shows it lit on the public page at 22:00
        page.fill("yaml", BAD_YAML.replace("25:00", "21:30"))
        page.submit_by("save-campaign")
        assert "Campaign blue-heart created." in page.text("#notice")
        page.goto(f"{base}/console/timeline?city=brussels&start=2026-07-30&at=2026-07-30T22:00")
        page.screenshot(artefacts / "4-timeline.png")
        state = page.evaluate(
            "document.querySelector('tr.public-site[data-site=\"atomium\"]').dataset.state"
        )
        assert state == "lit"
    for name in ("1-registered.png", "2-test-flash.png", "3-campaign-fault.png", "4-timeline.png"):
        assert (artefacts / name).stat().st_size > 1000
