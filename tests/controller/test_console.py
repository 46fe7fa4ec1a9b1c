"""The staff console (/console) over real HTTP: uvicorn, a real SQLite database, no broker.

Signing in and out, the cookie's flags, CSRF refusals (a missing token, a wrong one, a
cross-site post), role and city scoping (another city's device is a 404, as a missing
one), registration with the credentials shown once, campaign YAML faults placed next
to their line, the timeline's DST days and public preview, "all off" asking first,
the audit log, and a device's lifecycle transitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest

from controller.lifecycle import CommandState
from controller.metrics import Metrics
from controller.store.base import Move, NewDevice, NewVersion, Stores
from controller.store.sql import database
from controller.store.users import HINT_CHARS, Users
from controller.web.app import build_web
from controller.web.console.session import PRESESSION_COOKIE, SESSION_COOKIE
from devices.protocol import OFF, Plan, PlanStep, encode
from schedules.model import Campaign
from tests.controller.test_staff_api import CATALOG, NOW, FakeClock, campaign_body, public_view
from tests.controller.test_staff_api import serve as serve_app

BAD_YAML = """\
id: blue-heart
title: {en: Blue Heart}
color: "#009EDB"
priority: 60
windows:
  - targets: {cities: [brussels]}
    dates: ["2026-07-30"]
    start: {at: "25:00"}
    end: {at: "23:59"}
"""


@dataclass
class Console:
    http: httpx.Client
    stores: Stores
    users: Users
    tokens: dict[str, str]
    base: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def sign_in(self, who: str, http: httpx.Client | None = None, **headers: str) -> str:
        """Sign in as `who` on `http` (the shared client by default); the CSRF token."""
        http = http or self.http
        page = http.get("/console/sign-in")
        assert page.status_code == 200
        csrf = field(page.text, "csrf")
        answer = http.post(
            "/console/sign-in",
            data={"csrf": csrf, "token": self.tokens[who]},
            headers=headers,
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/console"
        return csrf_of(http)


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no field {name}"
    return unescape(found.group(1))


def csrf_of(http: httpx.Client) -> str:
    return field(http.get("/console").text, "csrf")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices(
            [NewDevice("atomium-ctl", "atomium"), NewDevice("menin-gate-ctl", "menin-gate")], NOW
        )
        users = Users(sessions)
        clock = FakeClock()
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
        )
        tokens = {
            "admin": users.add("ada", "admin", [], NOW),
            "coordinator": users.add("cora", "coordinator", [], NOW),
            "technician": users.add("tom", "technician", ["brussels"], NOW),
        }
        with serve_app(app) as http:
            yield Console(http, stores, users, tokens, str(http.base_url))


def set_cookie_header(answer: httpx.Response, name: str) -> str:
    found = [v for v in answer.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert len(found) == 1, answer.headers.get_list("set-cookie")
    return found[0]


# ---- signing in and out ------------------------------------------------------------


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_clears_it(console: Console) -> None:
    http = console.http
    assert http.get("/console").status_code == 303  # not signed in: to the sign-in page
    page = http.get("/console/sign-in")
    csrf = field(page.text, "csrf")
    pre = set_cookie_header(page, PRESESSION_COOKIE).lower()
    assert "httponly" in pre and "samesite=strict" in pre

    answer = http.post(
        "/console/sign-in", data={"csrf": csrf, "token": console.tokens["technician"]}
    )
    assert answer.status_code == 303
    cookie = set_cookie_header(answer, SESSION_COOKIE)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain HTTP, no proxy saying https
    session_token = http.cookies[SESSION_COOKIE]
    assert session_token.startswith("ilm_") and session_token != console.tokens["technician"]

    home = http.get("/console")
    assert home.status_code == 200
    assert "tom (technician: brussels)" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "form-action 'self'" in home.headers["content-security-policy"]

    out = http.post("/console/sign-out", data={"csrf": field(home.text, "csrf")})
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
    assert 'illuminate_console=""' in set_cookie_header(out, SESSION_COOKIE)
    assert http.get("/console").status_code == 303
    # the session's token is revoked, not only forgotten by the browser
    with console.client() as replay:
        answer = replay.get("/console", headers={"Cookie": f"{SESSION_COOKIE}={session_token}"})
        assert answer.status_code == 303
    assert console.users.authenticate(session_token, NOW) is None
    assert console.users.authenticate(console.tokens["technician"], NOW) is not None


def test_behind_a_proxy_saying_https_the_cookie_is_secure(console: Console) -> None:
    with console.client() as http:
        page = http.get("/console/sign-in")
        answer = http.post(
            "/console/sign-in",
            data={"csrf": field(page.text, "csrf"), "token": console.tokens["admin"]},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert answer.status_code == 303
        flags = [p.strip().lower() for p in set_cookie_header(answer, SESSION_COOKIE).split(";")]
        assert "secure" in flags


def test_a_session_lasts_12_hours_or_less_than_the_token_it_came_from(console: Console) -> None:
    short = console.users.issue_token("ada", NOW, NOW + timedelta(hours=1))
    console.tokens["short"] = short
    console.sign_in("short")
    (session,) = [
        t
        for t in console.users.tokens("ada", NOW)
        if t.hint == console.http.cookies[SESSION_COOKIE][:HINT_CHARS]
    ]
    assert session.expires_at == NOW + timedelta(hours=1)
    with console.client() as other:
        console.sign_in("admin", other)
        newest = console.users.tokens("ada", NOW)[-1]
        assert newest.expires_at == NOW + timedelta(hours=12)


def test_a_wrong_token_is_refused_and_sets_no_session(console: Console) -> None:
    http = console.http
    page = http.get("/console/sign-in")
    answer = http.post(
        "/console/sign-in", data={"csrf": field(page.text, "csrf"), "token": "ilm_nonsense"}
    )
    assert answer.status_code == 401
    assert "does not work" in answer.text
    assert not any(
        v.startswith(f"{SESSION_COOKIE}=") for v in answer.headers.get_list("set-cookie")
    )
    assert http.get("/console").status_code == 303


def test_revoking_the_users_tokens_signs_the_session_out(console: Console) -> None:
    console.sign_in("coordinator")
    assert console.http.get("/console/campaigns").status_code == 200
    console.users.revoke("cora", None, NOW)  # `illuminate users revoke cora --all`
    answer = console.http.get("/console/campaigns")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"


# ---- CSRF ---------------------------------------------------------------------------


def test_posts_without_the_csrf_token_or_from_another_site_are_refused(console: Console) -> None:
    csrf = console.sign_in("technician")
    http = console.http
    refused = [
        http.post("/console/devices", data={"id": "no-token", "site": "atomium"}),
        http.post("/console/devices", data={"id": "bad-token", "site": "atomium", "csrf": "x"}),
        http.post(
            "/console/devices",
            data={"id": "evil-origin", "site": "atomium", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        ),
        http.post(
            "/console/devices",
            data={"id": "cross-site", "site": "atomium", "csrf": csrf},
            headers={"Sec-Fetch-Site": "cross-site"},
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert "CSRF" in refused[0].text and "another" in refused[2].text
    assert console.stores.registry.device_ids() == {"atomium-ctl", "menin-gate-ctl"}
    # a post of another site carries no cookie at all (SameSite=Strict): the sign-in page
    with console.client() as stranger:
        answer = stranger.post("/console/devices", data={"id": "x", "site": "atomium"})
        assert answer.status_code == 303
    # the same form with its token, from this origin, goes through
    done = http.post(
        "/console/devices",
        data={"id": "same-origin", "site": "atomium", "csrf": csrf},
        headers={"Origin": console.base.rstrip("/"), "Sec-Fetch-Site": "same-origin"},
    )
    assert done.status_code == 201, done.text
    # behind a proxy that rewrites Host, its X-Forwarded-Host names the origin's host
    proxied = http.post(
        "/console/devices",
        data={"id": "via-proxy", "site": "atomium", "csrf": csrf},
        headers={
            "Origin": "https://illuminate.example.org",
            "X-Forwarded-Host": "illuminate.example.org",
        },
    )
    assert proxied.status_code == 201, proxied.text


def test_the_sign_in_form_needs_its_own_token(console: Console) -> None:
    with console.client() as http:
        http.get("/console/sign-in")
        answer = http.post("/console/sign-in", data={"token": console.tokens["admin"]})
        assert answer.status_code == 403
        assert SESSION_COOKIE not in http.cookies


# ---- technicians --------------------------------------------------------------------


def test_a_technician_sees_only_their_citys_devices(console: Console) -> None:
    csrf = console.sign_in("technician")
    http = console.http
    listing = http.get("/console/devices")
    assert listing.status_code == 200
    assert "atomium-ctl" in listing.text and "menin-gate-ctl" not in listing.text
    other = http.get("/console/devices/menin-gate-ctl")
    missing = http.get("/console/devices/nowhere-ctl")
    assert other.status_code == missing.status_code == 404
    assert "no device &#39;menin-gate-ctl&#39;" in other.text
    for action in ("test", "rotate", "decommission"):
        answer = http.post(
            f"/console/devices/menin-gate-ctl/{action}", data={"csrf": csrf, "confirm": "yes"}
        )
        assert answer.status_code == 404, action
    # another city's site is refused as an unknown one
    answer = http.post("/console/devices", data={"id": "x-ctl", "site": "menin-gate", "csrf": csrf})
    assert answer.status_code == 422 and "unknown site" in answer.text
    # and campaigns are not theirs
    assert http.get("/console/campaigns").status_code == 403
    assert http.get("/console/audit").status_code == 403
    assert console.stores.registry.devices(["menin-gate-ctl"])["menin-gate-ctl"].active


def test_registration_shows_the_password_once_with_the_agent_command(console: Console) -> None:
    csrf = console.sign_in("technician")
    answer = console.http.post(
        "/console/devices", data={"id": "atomium-two", "site": "atomium", "csrf": csrf}
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    password = re.search(r'<code id="password">([^<]+)</code>', answer.text)
    assert password
    snippet = unescape(re.search(r'<pre id="snippet">([^<]+)</pre>', answer.text, re.S).group(1))
    assert (
        "illuminate agent --broker mqtt://127.0.0.1:1883 --id atomium-two "
        "--password-file atomium-two.pw"
    ) in snippet
    assert password.group(1) in snippet
    record = console.stores.registry.devices(["atomium-two"])["atomium-two"]
    assert record.site_id == "atomium"
    # the device's page never shows it again
    page = console.http.get("/console/devices/atomium-two")
    assert page.status_code == 200 and password.group(1) not in page.text
    # the same id again: refused, named
    again = console.http.post(
        "/console/devices", data={"id": "atomium-two", "site": "atomium", "csrf": csrf}
    )
    assert again.status_code == 409 and "already registered" in again.text


def test_decommission_asks_first(console: Console) -> None:
    csrf = console.sign_in("technician")
    asked = console.http.post("/console/devices/atomium-ctl/decommission", data={"csrf": csrf})
    assert asked.status_code == 200 and 'id="confirm"' in asked.text
    assert console.stores.registry.devices(["atomium-ctl"])["atomium-ctl"].active
    done = console.http.post(
        "/console/devices/atomium-ctl/decommission", data={"csrf": csrf, "confirm": "yes"}
    )
    assert done.status_code == 303
    assert not console.stores.registry.devices(["atomium-ctl"])["atomium-ctl"].active


def test_a_devices_page_lists_every_lifecycle_transition(console: Console) -> None:
    plan = Plan(version=1, issued_at=NOW, steps=[PlanStep(at=NOW, state=OFF)])
    (command,) = console.stores.outbox.add_versions(
        [NewVersion("atomium-ctl", 1, encode(plan).decode(), NOW, None)]
    )
    console.stores.outbox.move(
        [Move(command.id, CommandState.PUBLISHED, NOW + timedelta(seconds=1))]
    )
    console.sign_in("technician")
    page = console.http.get("/console/devices/atomium-ctl")
    assert page.status_code == 200
    rows = re.findall(r'<tr class="transition">(.*?)</tr>', page.text, re.S)
    assert len(rows) == 2
    assert "2026-07-30 12:00:01 UTC" in rows[0] and "published" in rows[0]
    assert "pending" in rows[1]


# ---- coordinators -------------------------------------------------------------------


def test_a_yaml_fault_is_shown_next_to_its_line(console: Console) -> None:
    csrf = console.sign_in("coordinator")
    answer = console.http.post("/console/campaigns", data={"csrf": csrf, "yaml": BAD_YAML})
    assert answer.status_code == 422
    rows = re.findall(r'<tr class="([^"]*)" data-line="(\d+)"', answer.text)
    at = rows.index(("fault", "8"))
    assert rows[at - 1] == ("line has-fault", "8")  # right after line 8, `start: {at: "25:00"}`
    assert 'data-path="windows[0].start.at"' in answer.text
    assert "time must be HH:MM" in answer.text
    assert console.stores.campaigns.record("blue-heart") is None
    # fixed, it is stored
    fixed = BAD_YAML.replace("25:00", "21:30")
    stored = console.http.post("/console/campaigns", data={"csrf": csrf, "yaml": fixed})
    assert stored.status_code == 200 and "Campaign blue-heart created." in stored.text
    assert console.stores.campaigns.record("blue-heart") is not None
    # edit: the stored campaign comes back as YAML, and saves as it is
    editing = console.http.get("/console/campaigns", params={"edit": "blue-heart"})
    text = unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", editing.text, re.S).group(1))
    assert "21:30" in text
    again = console.http.post("/console/campaigns", data={"csrf": csrf, "yaml": text})
    assert again.status_code == 200 and "Campaign blue-heart replaced." in again.text
    assert console.http.get("/console/campaigns", params={"edit": "nothing"}).status_code == 404


def test_the_timeline_shows_dst_days_conflicts_and_the_public_at_t(console: Console) -> None:
    console.stores.campaigns.put(Campaign.model_validate(campaign_body()), NOW)
    rival = campaign_body(id="rival", priority=60, color="#FF0000")
    console.stores.campaigns.put(Campaign.model_validate(rival), NOW)
    console.sign_in("coordinator")
    http = console.http
    autumn = http.get("/console/timeline", params={"city": "brussels", "start": "2026-10-24"})
    assert autumn.status_code == 200
    days = re.findall(r'<div class="day( dst)?" data-day="([\d-]+)"', autumn.text)
    assert (" dst", "2026-10-25") in days and ("", "2026-10-24") in days
    assert "CEST to CET" in autumn.text

    summer = http.get(
        "/console/timeline",
        params={"city": "brussels", "start": "2026-07-30", "days": 1, "at": "2026-07-30T22:00"},
    )
    assert "equal priority" in summer.text  # blue-heart and rival overlap
    assert re.search(r'data-site="atomium" data-state="lit"', summer.text)
    assert "21:30:00 CEST" in summer.text
    before = http.get(
        "/console/timeline",
        params={"city": "brussels", "start": "2026-07-30", "at": "2026-07-30T20:00"},
    )
    assert re.search(r'data-site="atomium" data-state="scheduled"', before.text)


def test_all_off_asks_for_confirmation_then_is_in_force(console: Console) -> None:
    csrf = console.sign_in("coordinator")
    form = {
        "csrf": csrf,
        "reason": "Storm warning",
        "date": "2026-07-30",
        "start": "22:00",
        "end": "06:00",
        "targets": "all",
        "on": "off",
    }
    asked = console.http.post("/console/overrides", data=form)
    assert asked.status_code == 200 and 'id="confirm-all-off"' in asked.text
    assert not any(c.override for c in console.stores.campaigns.all())
    done = console.http.post("/console/overrides", data={**form, "confirm": "yes"})
    assert done.status_code == 200 and "is in force" in done.text
    (override,) = [c for c in console.stores.campaigns.all() if c.override]
    assert override.reason == "Storm warning" and not override.on
    assert override.windows[0].targets.all
    # without a reason: refused, named
    refused = console.http.post("/console/overrides", data={**form, "reason": ""})
    assert refused.status_code == 422 and "reason" in refused.text


def test_admins_read_the_audit_log(console: Console) -> None:
    csrf = console.sign_in("coordinator")
    console.http.post(
        "/console/campaigns", data={"csrf": csrf, "yaml": BAD_YAML.replace("25:00", "21:30")}
    )
    with console.client() as admin:
        console.sign_in("admin", admin)
        page = admin.get("/console/audit")
        assert page.status_code == 200
        entries = re.findall(r'<tr class="entry">(.*?)</tr>', page.text, re.S)
        assert len(entries) == 1
        assert "cora" in entries[0] and "created" in entries[0] and "blue-heart" in entries[0]


def test_a_third_party_controllers_new_password_comes_with_its_vendor_topics(
    console: Console,
) -> None:
    wled = NewDevice("atomium-wled", "atomium", None, "wled", {"topic": "wled/atomium"})
    console.stores.registry.add_devices([wled], NOW)
    csrf = console.sign_in("technician")
    done = console.http.post(
        "/console/devices/atomium-wled/rotate", data={"csrf": csrf, "confirm": "yes"}
    )
    assert done.status_code == 200 and "given a new password" in done.text
    assert re.search(r'<code id="password">[^<]{20,}</code>', done.text)
    assert "<code>wled/atomium/api</code>" in done.text  # what it subscribes to
    assert "<code>wled/atomium/g</code>" in done.text  # and publishes
    assert 'id="snippet"' not in done.text and 'id="vendor-settings"' in done.text
    assert "illuminate/v1/devices/atomium-wled/plan" not in done.text


def test_rotation_asks_first_then_shows_the_new_password_once(console: Console) -> None:
    csrf = console.sign_in("technician")
    before = console.stores.registry.devices(["atomium-ctl"])["atomium-ctl"].credentials_at
    asked = console.http.post("/console/devices/atomium-ctl/rotate", data={"csrf": csrf})
    assert asked.status_code == 200 and "Yes, rotate atomium-ctl" in asked.text
    assert console.stores.registry.devices(["atomium-ctl"])["atomium-ctl"].credentials_at == before
    done = console.http.post(
        "/console/devices/atomium-ctl/rotate", data={"csrf": csrf, "confirm": "yes"}
    )
    assert done.status_code == 200 and "given a new password" in done.text
    assert re.search(r'<code id="password">[^<]{20,}</code>', done.text)
    assert done.headers["cache-control"] == "no-store"
    assert console.stores.registry.devices(["atomium-ctl"])["atomium-ctl"].credentials_at == NOW
