"""The HTTP hook for brokers that delegate (EMQX 5 HTTP authn/authz), over real HTTP, as
the controller wires it from its settings, on real local accounts.

The requests are the bodies EMQX is configured to send (docs/broker-hook.md); the answers
must be what EMQX reads: 200 with `{"result": "allow" | "deny"}` (and `is_superuser` on
authentication). A caller without the token gets 401, which EMQX reads as "ignore".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from controller.app import Controller
from controller.settings import load_settings
from controller.web.broker_hook import AUTHN_PATH, AUTHZ_PATH
from devices.protocol import Kind, Topics
from tests.controller.test_staff_api import serve
from tests.support.mosquitto import free_port

T = Topics()
TOKEN = "hook-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTROLLER = {"clientid": "illuminate-controller", "username": "illuminate-controller"}


@dataclass
class Hook:
    http: httpx.Client
    controller: Controller

    def authn(self, clientid: str, username: str, password: str) -> dict[str, object]:
        body = {"clientid": clientid, "username": username, "password": password}
        response = self.http.post(AUTHN_PATH, json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return dict(response.json())

    def allowed(self, username: str, action: str, topic: str, clientid: str = "") -> bool:
        body = {"clientid": clientid or username, "username": username}
        response = self.http.post(
            AUTHZ_PATH, json=body | {"topic": topic, "action": action}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result in ("allow", "deny")
        return bool(result == "allow")


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[Hook]:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        broker={"url": f"mqtt://127.0.0.1:{free_port()}", "password": "controller-secret"},
        broker_hook={"token": TOKEN},
    )
    controller = Controller(settings)  # not started: only its web app is asked here
    assert controller.accounts is not None
    controller.accounts.create("dev-a", "secret-a")
    controller.accounts.create("dev-b", "secret-b")
    try:
        with serve(controller.web) as http:
            yield Hook(http, controller)
    finally:
        controller.stop()


def test_authentication_allows_only_a_device_as_itself(hook: Hook) -> None:
    assert hook.authn("dev-a", "dev-a", "secret-a") == {"result": "allow", "is_superuser": False}
    for clientid, username, password in (
        ("dev-b", "dev-a", "secret-a"),  # another device's client id
        ("dev-a", "dev-a", "secret-b"),  # another device's password
        ("dev-b", "dev-b", "secret-a"),
        ("dev-c", "dev-c", "secret-a"),  # nobody
        ("dev-a", "", ""),  # anonymous
    ):
        answer = hook.authn(clientid, username, password)
        assert answer == {"result": "deny", "is_superuser": False}, (clientid, username)


def test_the_controller_logs_in_with_its_configured_password_only(hook: Hook) -> None:
    answer = hook.authn(CONTROLLER["clientid"], CONTROLLER["username"], "controller-secret")
    assert answer == {"result": "allow", "is_superuser": False}
    assert hook.authn("other-id", CONTROLLER["username"], "controller-secret")["result"] == "deny"
    assert hook.authn(CONTROLLER["clientid"], CONTROLLER["username"], "")["result"] == "deny"


def test_authorization_is_the_devices_own_topics(hook: Hook) -> None:
    for topic in (T.ack("dev-a"), T.state("dev-a"), T.status("dev-a")):
        assert hook.allowed("dev-a", "publish", topic), topic
    for topic in (T.ack("dev-b"), T.state("dev-b"), T.plan("dev-a"), T.controller_status, "x/y"):
        assert not hook.allowed("dev-a", "publish", topic), topic
    assert hook.allowed("dev-a", "subscribe", T.plan("dev-a"))
    assert hook.allowed("dev-a", "subscribe", T.controller_status)
    for topic_filter in ("#", "+/plan", T.device_filter(Kind.PLAN), T.plan("dev-b")):
        assert not hook.allowed("dev-a", "subscribe", topic_filter), topic_filter


def test_the_controller_may_use_the_topic_root_only(hook: Hook) -> None:
    user = CONTROLLER["username"]
    assert hook.allowed(user, "publish", T.plan("dev-a"))
    assert hook.allowed(user, "publish", T.controller_status)
    assert hook.allowed(user, "subscribe", T.device_filter(Kind.ACK))
    assert not hook.allowed(user, "publish", "elsewhere/x")
    assert not hook.allowed(user, "subscribe", "#")
    assert not hook.allowed(user, "publish", f"{T.root}/devices/+/plan"), "no wildcard publish"


def test_a_disabled_device_is_denied_at_once(hook: Hook) -> None:
    accounts = hook.controller.accounts
    assert accounts is not None
    accounts.disable("dev-a")
    assert hook.authn("dev-a", "dev-a", "secret-a")["result"] == "deny"
    accounts.rotate("dev-b", "secret-b2")
    assert hook.authn("dev-b", "dev-b", "secret-b")["result"] == "deny"
    assert hook.authn("dev-b", "dev-b", "secret-b2")["result"] == "allow"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_a_caller_without_the_token_gets_401(hook: Hook, headers: dict[str, str]) -> None:
    body = {"clientid": "dev-a", "username": "dev-a", "password": "secret-a"}
    assert hook.http.post(AUTHN_PATH, json=body, headers=headers).status_code == 401
    asked = {"clientid": "dev-a", "username": "dev-a", "topic": T.ack("dev-a"), "action": "publish"}
    assert hook.http.post(AUTHZ_PATH, json=asked, headers=headers).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"clientid": "dev-a", "username": "dev-a"},
        {"clientid": "dev-a", "username": "dev-a", "password": "secret-a", "extra": 1},
        {"clientid": 1, "username": "dev-a", "password": "secret-a"},
    ],
)
def test_a_malformed_request_is_a_4xx_never_an_allow(hook: Hook, body: dict[str, object]) -> None:
    response = hook.http.post(AUTHN_PATH, json=body, headers=AUTH)
    assert response.status_code == 422
    asked = {"clientid": "dev-a", "username": "dev-a", "topic": T.ack("dev-a"), "action": "all"}
    assert hook.http.post(AUTHZ_PATH, json=asked, headers=AUTH).status_code == 422


def test_without_a_token_there_is_no_hook(tmp_path: Path) -> None:
    settings = load_settings(
        None, data_dir=tmp_path, broker={"url": f"mqtt://127.0.0.1:{free_port()}"}
    )
    controller = Controller(settings)
    try:
        assert controller.accounts is None
        with serve(controller.web) as http:
            body = {"clientid": "dev-a", "username": "dev-a", "password": "x"}
            assert http.post(AUTHN_PATH, json=body, headers=AUTH).status_code == 404
    finally:
        controller.stop()
