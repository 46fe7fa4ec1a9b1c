"""The HTTP hook for brokers that delegate their decisions: EMQX 5's HTTP authentication
and HTTP authorization.

Two routes, both POST with a JSON body, both answered 200 with a JSON body:

- `POST /api/v1/broker/authn`, body `{"clientid", "username", "password"}`: a CONNECT.
  Answer `{"result": "allow" | "deny", "is_superuser": false}`.
- `POST /api/v1/broker/authz`, body `{"clientid", "username", "topic", "action"}` with
  `action` `publish` or `subscribe`: one PUBLISH or SUBSCRIBE of a logged-in client.
  Answer `{"result": "allow" | "deny"}`.

Nobody is a superuser: the controller's rights, like each device's, come from the
`Gate` (`controller/broker/gate.py`), the same decisions as the embedded broker's. The
broker proves itself with a bearer token (`broker_hook.token`), sent in the
`Authorization` header it is configured with; any other caller gets 401, and EMQX reads
a 401 as "ignore". With no token configured the routes are not there at all.

The EMQX side (see docs/broker-hook.md): an HTTP authenticator and an HTTP authorizer on
these URLs, with the bodies above built from `${clientid}`, `${username}`, `${password}`,
`${topic}` and `${action}`, and `authorization.no_match = deny`, so that what the hook
cannot answer is refused.
"""

from __future__ import annotations

import hmac
import logging
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from controller.broker.gate import Gate

log = logging.getLogger(__name__)

AUTHN_PATH = "/api/v1/broker/authn"
AUTHZ_PATH = "/api/v1/broker/authz"

_MQTT_STRING = 65535
"""The longest string MQTT can carry (a client id, username, password or topic)."""


class _Asked(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clientid: str = Field(max_length=_MQTT_STRING)
    username: str = Field(max_length=_MQTT_STRING)


class AuthnRequest(_Asked):
    password: str = Field(max_length=_MQTT_STRING)


class MqttAction(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


class AuthzRequest(_Asked):
    topic: str = Field(min_length=1, max_length=_MQTT_STRING)
    action: MqttAction


class Result(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class AuthnResponse(BaseModel):
    result: Result
    is_superuser: Literal[False] = False


class AuthzResponse(BaseModel):
    result: Result


def _verdict(ok: bool) -> Result:
    return Result.ALLOW if ok else Result.DENY


def build_broker_hook(gate: Gate, token: str) -> APIRouter:
    """The two routes, answering with `gate`'s decisions to callers holding `token`."""
    if not token:
        raise ValueError("the broker hook needs a token")
    expected = f"Bearer {token}".encode()

    def the_broker(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "the broker hook's token is missing or wrong",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(tags=["broker hook"], dependencies=[Depends(the_broker)])

    @router.post(AUTHN_PATH, response_model=AuthnResponse)
    async def authn(body: AuthnRequest) -> AuthnResponse:
        stamp = await run_in_threadpool(gate.admit, body.username, body.password, body.clientid)
        if stamp is None:
            log.info("broker hook: refused the login of %r (user %r)", body.clientid, body.username)
        return AuthnResponse(result=_verdict(stamp is not None))

    @router.post(AUTHZ_PATH, response_model=AuthzResponse)
    def authz(body: AuthzRequest) -> AuthzResponse:
        if body.action is MqttAction.PUBLISH:
            ok = "+" not in body.topic and "#" not in body.topic
            ok = ok and gate.may_publish(body.username, body.topic)
        else:
            ok = gate.may_subscribe(body.username, body.topic)
        return AuthzResponse(result=_verdict(ok))

    return router
