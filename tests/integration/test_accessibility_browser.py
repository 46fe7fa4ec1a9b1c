"""WCAG 2.1 AA in a real browser: axe-core (vendored, `tests/support/vendor/axe-core/`) run
by headless Chromium over the DevTools protocol on the public page and the staff console,
against a real controller, Mosquitto and simulated devices (the rig of the public page's
browser test, `test_page_browser.py`; the console's page driver of `test_console_browser.py`).

One browser session audits:

- the public page in every language (`/`, `/fr/`, `/nl/`, `/de/`) before the night's
  window (every monument scheduled) and during it (lit, one pending: its device holds back
  its acknowledgement), without its script, at phone size, in dark mode and in forced
  colours; and the 404 page;
- the console: sign-in, a technician's home, devices list and registration form (and its
  refusal), the credentials page, a device's page, a confirmation and a 404; a
  coordinator's campaign editor showing a fault, the campaigns, the timeline, the audit
  log and the overrides form.

A `serious` or `critical` violation fails the test; every one is printed with its page,
rule, impact, target selectors and help address. The same session checks that
`prefers-reduced-motion: reduce` stops every animation and transition (computed style),
that Tab reaches every link, button and field with a visible focus indicator, and that
the public page reflows at 320 CSS px without scrolling sideways and keeps its text
whole with WCAG 1.4.12's text spacing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.simulator import Fleet, FleetSpec
from tests.controller.test_console import BAD_YAML
from tests.integration import test_page_browser as public_rig
from tests.integration.conftest import DEADLINE, wait_until
from tests.integration.test_console_browser import Page
from tests.support.a11y import Axe, TabWalk, motion, tab_walk, text_spacing
from tests.support.cdp import Browser, chromium, chromium_binary
from tests.support.peer import Peer

pytestmark = [pytest.mark.broker, pytest.mark.slow]

served = public_rig.served  # the fixture: a controller, Mosquitto, uvicorn
LANGUAGES = ("/", "/fr/", "/nl/", "/de/")
DESKTOP = public_rig.DESKTOP
PHONE = public_rig.PHONE
NARROW = (320, 640)
DARK = [{"name": "prefers-color-scheme", "value": "dark"}]
FORCED = [{"name": "forced-colors", "value": "active"}]
WIDER_THAN_SCREEN = """
(() => { const root = document.documentElement, width = root.clientWidth;
  return root.scrollWidth <= width ? null :
  [root.scrollWidth + " px"].concat([...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > width + 1)
    .map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
      + (typeof el.className === "string" && el.className ? "." + el.className.split(" ")[0] : "")
      + " (" + Math.round(el.getBoundingClientRect().right) + " px, in "
      + (el.parentElement.id || el.parentElement.className) + ")").slice(0, 10)); })()
"""
REDUCE = [{"name": "prefers-reduced-motion", "value": "reduce"}]
ACCEPT = [{"name": "prefers-reduced-motion", "value": "no-preference"}]


def keyboard(browser: Browser, page: str, problems: list[str]) -> TabWalk:
    walk = tab_walk(browser)
    if not walk.expected:
        problems.append(f"[{page}] no interactive element found")
    if walk.unreached:
        problems.append(f"[{page}] not reached by Tab: {walk.unreached} (visited {walk.visited})")
    if walk.no_indicator:
        problems.append(f"[{page}] no visible focus indicator: {walk.no_indicator}")
    return walk


def test_the_public_page_and_the_console_meet_wcag_21_aa(
    served: public_rig.Served, tmp_path: Path
) -> None:
    if chromium_binary() is None:
        pytest.fail(
            "The accessibility test needs Chromium (Debian package 'chromium'). "
            "Run `make browser` (as root it installs it), or: sudo apt-get install chromium",
            pytrace=False,
        )
    rig = served.rig
    rig.register(public_rig.campaign(opens_in_s=public_rig.OPENS_IN_S, length_s=600))
    controller = rig.controller
    assert controller is not None
    rig.fleet = Fleet(
        FleetSpec(devices=rig.devices[1:]), controller.broker_address(), topics=rig.settings.topics
    )
    rig.fleet.start()
    first = rig.devices[0]
    problems: list[str] = []
    with (
        Peer(served.mosquitto.port, first.id, first.password, client_id=first.id) as peer,
        chromium(tmp_path / "chromium") as browser,
    ):
        public_rig.HandDevice(peer, first.id)  # online; holds back its acknowledgement
        axe = Axe(browser)
        browser.screen(*DESKTOP)
        browser.call("Network.enable")  # every page fetched anew, never a cached copy
        browser.call("Network.setCacheDisabled", cacheDisabled=True)

        # before the window: every monument scheduled
        assert wait_until(
            lambda: (
                set(rig.served().values()) == {"scheduled"}
                and len(rig.served()) == public_rig.SITES
            ),
            timeout=DEADLINE,
        ), rig.served()
        for path in LANGUAGES:
            browser.navigate(served.url + path)
            axe.check(f"{path} scheduled")

        # during the window: two monuments lit, the first pending
        controller.stores.campaigns.put(
            public_rig.campaign(opens_in_s=2, length_s=600), controller.clock()
        )
        controller.changed()
        assert wait_until(
            lambda: rig.served() == {"site-01": "pending", "site-02": "lit", "site-03": "lit"},
            timeout=DEADLINE,
        ), rig.served()
        for path in LANGUAGES:
            browser.navigate(served.url + path)
            browser.wait_for(
                "document.querySelector('#campaign').dataset.phase === 'during'"
                " && document.querySelector('#site-site-02').style.cssText !== ''",  # script ran
                DEADLINE,
            )
            axe.check(f"{path} lit")
        browser.navigate(served.url + "/en/")
        browser.call("Emulation.setEmulatedMedia", features=DARK)
        axe.check("/en/ lit, dark")
        browser.screen(*PHONE, mobile=True)
        axe.check("/en/ lit, dark, phone")
        browser.call("Emulation.setEmulatedMedia", features=[])
        axe.check("/en/ lit, phone")
        # reflow (WCAG 1.4.10): at 320 CSS px (1280 px at 400 %), no scrolling sideways
        browser.screen(*NARROW)  # a desktop window, as zoomed; no mobile shrink-to-fit
        if wide := browser.evaluate(WIDER_THAN_SCREEN):
            problems.append(f"[/en/] wider than {NARROW[0]} px: {wide}")
        if spilled := text_spacing(browser):
            problems.append(f"[/en/ 320 px] cut or overlapping with wider text spacing: {spilled}")
        browser.screen(*DESKTOP)
        if spilled := text_spacing(browser):
            problems.append(f"[/en/] cut or overlapping with wider text spacing: {spilled}")
        browser.call("Emulation.setEmulatedMedia", features=FORCED)
        axe.check("/en/ lit, forced colours")
        browser.call("Emulation.setEmulatedMedia", features=[])

        # motion only for those who accept it: the pending icon pulses, unless reduced
        browser.call("Emulation.setEmulatedMedia", features=ACCEPT)
        moving = motion(browser)
        assert any("pending-pulse" in m for m in moving), moving  # the check can see motion
        browser.call("Emulation.setEmulatedMedia", features=REDUCE)
        if still := motion(browser):
            problems.append(f"[/en/] moves under prefers-reduced-motion: reduce: {still}")
        browser.call("Emulation.setEmulatedMedia", features=[])

        # the keyboard reaches every link and control, with a visible focus
        walk = keyboard(browser, "/en/", problems)
        skip = browser.evaluate("window.__a11yKey(document.querySelector('.skip-link'))")
        if walk.visited[:1] != [skip]:
            problems.append(f"[/en/] the first Tab does not reach the skip link: {walk.visited}")

        # without the page's script: the server's page alone (the script is blocked
        # rather than all scripts turned off, which would stop axe-core's own timers)
        browser.call("Network.setBlockedURLs", urls=["*/static/app.js"])
        for path in LANGUAGES:
            browser.navigate(served.url + path)
            # the script paints a lit monument's border in the campaign colour
            assert browser.evaluate("document.querySelector('#site-site-02').style.cssText") == ""
            axe.check(f"{path} lit, no script")
        browser.call("Network.setBlockedURLs", urls=[])
        for path in ("/en/monuments/site-02", "/fr/monuments/site-01", "/embed/brussels?lang=nl"):
            browser.navigate(served.url + path)
            assert served.http.get(path).status_code == 200, path
            axe.check(f"{path} lit")
            keyboard(browser, path, problems)
        browser.call("Emulation.setEmulatedMedia", features=DARK)
        axe.check("/embed/brussels?lang=nl lit, dark")
        browser.call("Emulation.setEmulatedMedia", features=[])
        browser.navigate(served.url + "/xx/")
        assert browser.evaluate("document.title").startswith("Page not found")
        axe.check("/xx/ not found")

        # the console: a technician
        base = served.url + "/console"
        now = controller.clock()
        tom = controller.users.add("tom", "technician", ["brussels"], now)
        cora = controller.users.add("cora", "coordinator", [], now)
        page = Page(browser)
        page.goto(base)
        assert page.evaluate("location.pathname") == "/console/sign-in"
        axe.check("console sign-in")
        keyboard(browser, "console sign-in", problems)
        page.fill("token", "ilm_wrong")
        page.submit_by("sign-in")
        axe.check("console sign-in, refused")
        page.fill("token", tom)
        page.submit_by("sign-in")
        assert "tom (technician: brussels)" in page.text("#who")
        axe.check("console home")
        page.goto(base + "/devices")
        axe.check("console devices")
        keyboard(browser, "console devices", problems)
        page.fill("device-id", "Not An Id")
        page.evaluate("document.getElementById('register-form').noValidate = true")
        page.submit_by("register")
        axe.check("console devices, registration refused")
        page.fill("device-id", "belfry-ctl")
        page.submit_by("register")
        assert page.text("#password")
        axe.check("console credentials")
        keyboard(browser, "console credentials", problems)
        page.goto(f"{base}/devices/{rig.devices[1].id}")
        axe.check("console device")
        keyboard(browser, "console device", problems)
        page.submit_by("rotate")
        assert page.evaluate("!!document.getElementById('confirm')")
        axe.check("console confirmation")
        page.goto(f"{base}/devices/no-such-device")
        axe.check("console not found")
        page.submit_by("sign-out")

        # a coordinator
        page.fill("token", cora)
        page.submit_by("sign-in")
        page.goto(base + "/campaigns")
        page.fill("yaml", BAD_YAML)
        page.submit_by("save-campaign")
        assert "time must be HH:MM" in page.text('tr.fault[data-path="windows[0].start.at"]')
        axe.check("console campaign editor, fault")
        keyboard(browser, "console campaign editor", problems)
        page.fill("yaml", BAD_YAML.replace("25:00", "21:30").replace("blue-heart", "summer"))
        page.submit_by("save-campaign")
        assert "Campaign summer created." in page.text("#notice")
        axe.check("console campaigns")
        page.goto(f"{base}/timeline?city=brussels&start=2026-07-30&at=2026-07-30T22:00")
        axe.check("console timeline")
        keyboard(browser, "console timeline", problems)
        page.goto(base + "/audit")
        assert "summer" in page.text("main")
        axe.check("console audit log")
        page.goto(base + "/overrides")
        page.fill("reason", "A storm")
        page.evaluate("document.querySelector('input[name=targets][value=all]').checked = true")
        page.submit_by("put-override")
        assert page.evaluate("!!document.getElementById('confirm-all-off')")
        axe.check("console overrides, all off to confirm")
        keyboard(browser, "console overrides", problems)

    assert len(axe.pages) == 35
    assert not (axe.violations or problems), "\n".join(
        ([axe.report()] if axe.violations else []) + problems
    )
