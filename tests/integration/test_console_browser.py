"""The staff console in a real browser: headless Chromium (Debian's), driven over the
DevTools protocol, against a real controller, a private Mosquitto with the
dynamic-security plugin (the controller makes each device's broker account) and a real
device agent (simulated fixture).

One browser session: a technician signs in, registers a device (the password is read
from the page, as a technician would copy it), the agent is started with that
password, and the technician test-flashes it and sees the round trip; then signs out,
and a coordinator signs in, uploads a campaign with a bad time and sees the fault next
to its line. Screenshots go to the test's tmp folder (`artefacts/`).

Chromium must be installed (`make browser`); the test fails, never skips, without it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from controller.app import Controller
from controller.settings import load_settings
from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from schedules.model import SiteCatalog
from tests.controller.test_console import BAD_YAML
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until
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


# ---- a small DevTools-protocol driver ----


class CdpError(RuntimeError):
    pass


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.fail(
        "The browser test needs Chromium (Debian package 'chromium'). "
        "Run `make browser` (as root it installs it), or: sudo apt-get install chromium",
        pytrace=False,
    )


class Page:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CdpError("no answer from Chromium in time")
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=left))
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + DEADLINE
        while True:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    del self.events[: i + 1]
                    return
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def submit_by(self, button_id: str) -> None:
        """Click a form's button and wait for the page the form leads to."""
        self.events.clear()
        self.evaluate(f"document.getElementById({json.dumps(button_id)}).click()")
        self.wait_event("Page.loadEventFired")

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
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))


@contextmanager
def chromium(work: Path) -> Iterator[Page]:
    profile = work / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = (work / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(work)},
        start_new_session=True,  # so the whole browser ends with it
    )
    try:
        port_file = profile / "DevToolsActivePort"
        assert wait_until(
            lambda: (
                proc.poll() is not None
                or (port_file.is_file() and port_file.read_text().count("\n") >= 1)
            ),
            timeout=DEADLINE,
            step=0.05,
        ), "Chromium did not start"
        assert proc.poll() is None, (work / "chromium.log").read_text()
        port = int(port_file.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(t for t in targets if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            page.call("Page.enable")
            page.call("Runtime.enable")
            yield page
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


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
    with serve(controller.web) as http, chromium(tmp_path / "chromium") as page:
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
