"""The public page in a real browser: headless Chromium renders GET / from a live rig.

A real controller, a simulated fleet and Mosquitto, served by uvicorn as in
test_http.py. Chromium loads the page, runs app.js (which fetches the public JSON)
and prints the resulting DOM (`--dump-dom`); the assertions read that DOM.
`--virtual-time-budget` lets the page's scripts run until they go idle: virtual time
does not advance while a network fetch is pending, so the first poll completes and
renders before the DOM is dumped, and no second poll (10 s later) starts.

Chromium must be installed (`make browser`); the test fails, never skips, without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.app import Controller
from controller.web.status_route import AS_OF_HEADER
from schedules.model import display_name
from tests.integration.conftest import DEADLINE, Rig, wait_until, whole_second, window_campaign
from tests.support.mosquitto import CONTROLLER_PASSWORD, free_port

pytestmark = [pytest.mark.broker]

SITES = 3
VIRTUAL_TIME_MS = 5000
CHROMIUM_TIMEOUT_S = 60.0
SCREEN = (420, 900)  # a phone-sized viewport
STATUS = "/api/v1/public/status"


# ---- Chromium ----


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


def run_chromium(url: str, work: Path, *extra: str, budget_ms: int = VIRTUAL_TIME_MS) -> str:
    """Run headless Chromium once on `url` with a fresh profile; return its stdout."""
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "profile"
    cmd = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        # without these, Chromium's own connections are refused on a closed network
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    env = {**os.environ, "HOME": str(work)}
    # Its own session, so a timeout ends the whole browser (renderer, zygote and all).
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail(f"Chromium did not finish within {CHROMIUM_TIMEOUT_S:.0f} s: {cmd}")
    assert proc.returncode == 0, f"Chromium exited with {proc.returncode}:\n{err[-3000:]}"
    return out


# ---- A small DOM from Chromium's serialised HTML ----

# HTML elements without an end tag
VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"))
VOID |= {"source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()

    def find_class(self, name: str) -> list[Node]:
        return [n for n in self.walk() if n.has_class(name)]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v if v is not None else "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


class Dom:
    def __init__(self, html: str) -> None:
        self.html = html
        builder = _Builder()
        builder.feed(html)
        builder.close()
        self.root = builder.root
        self.ids = {n.attrs["id"]: n for n in self.root.walk() if "id" in n.attrs}

    def by_id(self, ident: str) -> Node:
        assert ident in self.ids, f"no #{ident} in the rendered page"
        return self.ids[ident]

    def with_attr(self, name: str) -> list[Node]:
        return [n for n in self.root.walk() if name in n.attrs]

    def rendered(self) -> bool:
        """Has app.js rendered data from the server (not just "Loading…")?"""
        return "count-lit" in self.ids and bool(self.with_attr("data-state"))


def render(url: str, work: Path) -> Dom:
    dom = Dom(run_chromium(url, work, "--dump-dom"))
    assert dom.rendered(), f"the page did not render the status:\n{dom.html[:3000]}"
    return dom


# ---- The rig, served over HTTP ----


class Recorder:
    """ASGI wrapper around the real app: notes (path, status) of every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, noting)

    def statuses(self, path: str) -> list[int]:
        return [status for p, status in self.seen if p == path]


@dataclass
class Served:
    rig: Rig
    url: str
    http: httpx.Client
    recorder: Recorder

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(STATUS).json()
        return body

    def all_in(self, state: str) -> bool:
        sites = self.status()["sites"]
        return len(sites) == SITES and all(s["state"] == state for s in sites)


@pytest.fixture
def serve(rig_factory: Callable[..., Rig]) -> Iterator[Callable[[float, float], Served]]:
    running: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(opens_in_s: float, length_s: float) -> Served:
        rig = rig_factory(SITES)
        controller = rig.start_controller()
        opens = whole_second(opens_in_s)
        rig.register(window_campaign(opens, opens + timedelta(seconds=length_s)))
        rig.start_fleet()
        port = free_port()
        recorder = Recorder(controller.web)
        server = uvicorn.Server(
            uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=url, timeout=5)
        running.append((server, thread, http))
        assert wait_until(lambda: server.started, timeout=DEADLINE)
        # the first rendering is built in the background; until then the status is 503
        assert wait_until(lambda: http.get(STATUS).status_code == 200, timeout=60)
        return Served(rig, url + "/", http, recorder)

    yield start
    for server, thread, http in running:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)


# ---- Checks shared by the tests ----


def parse_instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_private(dom: Dom) -> None:
    for secret in ("dev-0", "pw-0", "illuminate/v1", CONTROLLER_PASSWORD, "127.0.0.1"):
        assert secret not in dom.html, f"{secret!r} leaked into the rendered page"


def assert_times(dom: Dom) -> None:
    checked = dom.by_id("last-checked")
    data_time = dom.by_id("last-updated")
    assert checked.tag == data_time.tag == "time"
    at = parse_instant(checked.attrs["datetime"])
    # virtual time runs ahead of the wall clock by at most the budget
    assert abs(at - datetime.now(UTC)) < timedelta(seconds=60)
    parse_instant(data_time.attrs["datetime"])
    updated = dom.by_id("updated")
    assert "hidden" not in updated.attrs
    text = " ".join(updated.text().split())
    assert text.startswith("Checked ") and " · data from " in text, text
    assert "hidden" in dom.by_id("stale-warning").attrs


def assert_sites(dom: Dom, served: Served, state: str) -> None:
    sites = served.rig.sites.sites
    stated = dom.with_attr("data-state")
    # only site elements carry data-state
    assert sorted(n.attrs["id"] for n in stated) == sorted(f"site-{s.id}" for s in sites)
    for site in sites:
        li = dom.by_id(f"site-{site.id}")
        assert li.tag == "li"
        assert li.attrs["data-state"] == state
        names = li.find_class("site-name")
        assert [n.text() for n in names] == [display_name(site.name)]
        assert len(li.find_class("badge")) == 1
        assert len(li.find_class("window")) == 1
    cities = [n for n in dom.root.walk() if "data-city" in n.attrs]
    assert [c.attrs["data-city"] for c in cities] == ["Brussels"]
    assert "hidden" in dom.by_id("list-message").attrs
    assert "hidden" not in dom.by_id("counts").attrs
    assert dom.by_id("count-total").text() == str(SITES)


# ---- The tests ----


def test_lit_sites_render_in_a_browser(serve: Callable[[float, float], Served], tmp_path: Path):
    served = serve(2, 300)
    assert wait_until(lambda: served.all_in("lit"), timeout=DEADLINE), served.status()
    color = served.status()["sites"][0]["color"]

    dom = render(served.url, tmp_path / "dom")

    assert_sites(dom, served, "lit")
    assert dom.by_id("count-lit").text() == str(SITES)
    summary = " ".join(dom.by_id("summary").text().split())
    assert summary == f"{SITES} of {SITES} monuments lit"
    for code in ("pending", "unconfirmed", "offline", "scheduled", "off"):
        assert dom.by_id(f"count-{code}").text() == "0"
    for site in served.rig.sites.sites:
        li = dom.by_id(f"site-{site.id}")
        assert li.has_class("has-colour")
        swatches = li.find_class("swatch")
        assert len(swatches) == 1
        assert swatches[0].attrs["title"] == color
        assert swatches[0].attrs["role"] == "img"
        assert "background-color" in swatches[0].attrs.get("style", "")
        assert len(li.find_class("confirmed")) == 1
        # how it was confirmed, in words: these agents have no light sensor
        (how,) = li.find_class("confirmed-by")
        assert (how.attrs["data-confirmed-by"], how.text()) == (
            "echo",
            "by the device's own report",
        )
        assert [b.text() for b in li.find_class("state-label")] == ["Lit"]
    assert_times(dom)
    assert_private(dom)

    shot = tmp_path / "page.png"
    run_chromium(
        served.url,
        tmp_path / "shot",
        f"--screenshot={shot}",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        "--hide-scrollbars",
    )
    assert shot.is_file(), "Chromium wrote no screenshot"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000, f"screenshot only {shot.stat().st_size} bytes"


def test_scheduled_sites_render_before_the_window(
    serve: Callable[[float, float], Served], tmp_path: Path
):
    served = serve(1800, 600)  # opens in half an hour
    assert wait_until(lambda: served.all_in("scheduled"), timeout=DEADLINE), served.status()

    dom = render(served.url, tmp_path / "dom")

    assert_sites(dom, served, "scheduled")
    assert dom.by_id("count-lit").text() == "0"
    assert dom.by_id("count-scheduled").text() == str(SITES)
    summary = " ".join(dom.by_id("summary").text().split())
    assert summary == f"0 of {SITES} monuments lit"
    assert not dom.root.find_class("swatch")
    assert not dom.root.find_class("has-colour")
    for site in served.rig.sites.sites:
        li = dom.by_id(f"site-{site.id}")
        assert [b.text() for b in li.find_class("state-label")] == ["Scheduled"]
        assert len([n for n in li.walk() if n.tag == "time"]) == 2  # the window's start, end
    assert_times(dom)
    assert_private(dom)


def test_check_time_moves_on_while_the_data_is_unchanged(
    serve: Callable[[float, float], Served], tmp_path: Path
):
    """The ETag ignores generated_at: an unchanged status answers 304, and the page
    still shows that it checked (client clock), next to the unchanged data time."""
    served = serve(2, 300)
    assert wait_until(lambda: served.all_in("lit"), timeout=DEADLINE), served.status()
    before = len(served.recorder.statuses(STATUS))

    # 15 s of virtual time: the first poll at 0 s (200), the next at 10 s (304).
    dom = Dom(run_chromium(served.url, tmp_path / "dom", "--dump-dom", budget_ms=15_000))

    assert served.recorder.statuses(STATUS)[before:] == [200, 304]
    checked = parse_instant(dom.by_id("last-checked").attrs["datetime"])
    data_time = parse_instant(dom.by_id("last-updated").attrs["datetime"])
    assert timedelta(seconds=9) <= checked - data_time <= timedelta(seconds=30)
    assert "hidden" in dom.by_id("stale-warning").attrs
    assert dom.by_id("count-lit").text() == str(SITES)


def test_a_last_known_copy_says_as_of_when(serve: Callable[[float, float], Served], tmp_path: Path):
    """After a restart, before its first build, the controller serves the status it
    saved when it stopped: the page shows it, and says as of when."""
    served = serve(2, 300)
    assert wait_until(lambda: served.all_in("lit"), timeout=DEADLINE), served.status()
    stopping, served.rig.controller = served.rig.controller, None
    assert stopping is not None
    stopping.stop()  # saves the status, current until now
    restarted = Controller(served.rig.settings)  # not started: it serves only the copy
    try:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(restarted.web, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            assert wait_until(lambda: server.started, timeout=DEADLINE)
            url = f"http://127.0.0.1:{port}"
            as_of = httpx.get(url + STATUS).headers[AS_OF_HEADER]

            dom = render(url + "/", tmp_path / "dom")
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    finally:
        restarted.stop()

    warning = dom.by_id("stale-warning")
    assert "hidden" not in warning.attrs
    assert warning.attrs["data-stale"] == "last-known"
    stamp = dom.by_id("as-of")
    assert stamp.tag == "time"
    assert parse_instant(stamp.attrs["datetime"]) == parse_instant(as_of)
    assert stamp.text() and stamp.text() in " ".join(warning.text().split())
    assert "restarting" in warning.text()
    assert_sites(dom, served, "lit")  # what it was, as of then
