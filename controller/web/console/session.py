"""The staff console's session: a staff token kept in a cookie, and CSRF protection.

- Signing in takes a staff token (`illuminate users add` or `users token`), checked by
  `Users.authenticate` exactly as the staff API checks a bearer token. The console then
  issues the user a session token of its own (`Users.issue_token`), which expires after
  `SESSION_HOURS` (or with the token signed in with, if that expires sooner), and keeps
  it in the cookie `SESSION_COOKIE`: `HttpOnly` (no script reads it), `SameSite=Strict`
  (no other site's page sends it), `Path=/console`, and `Secure` when the request came
  over TLS: its own scheme is `https`, or a proxy in front said so with
  `X-Forwarded-Proto: https` (the header only ever adds the flag, never removes it).
  The token signed in with never sits in the browser. Each request authenticates the
  session token again, so an expired or revoked one, or a disabled user, is signed out
  at once. Signing out revokes the session token and clears the cookie.
- Every POST carries a CSRF token in the form field `csrf`: an HMAC of a fixed label
  keyed by the session's token, so a page of another origin, which can read neither
  the cookie nor our pages, cannot forge it. A POST whose field is missing or wrong is
  refused (403), and so is one that a browser marks as cross-site
  (`Sec-Fetch-Site: cross-site` or `same-site`) or whose `Origin` is not this host
  (the `Host` header, or the `X-Forwarded-Host` of a proxy that rewrites it: a
  browser's form cannot set that header, and a script of another origin cannot send it
  without a CORS preflight, which the console does not answer).
  The sign-in form, before any session, uses a double-submit token: a random value in
  the cookie `PRESESSION_COOKIE` that the form must repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response, status

from controller.access import Action, Grant, grant
from controller.auth import Principal
from controller.store.users import HINT_CHARS
from controller.web.api import StaffContext

PREFIX = "/console"
SESSION_COOKIE = "illuminate_console"
PRESESSION_COOKIE = "illuminate_console_pre"
CSRF_FIELD = "csrf"
_CSRF_LABEL = b"illuminate console csrf v1"
SIGN_IN_PATH = f"{PREFIX}/sign-in"
SESSION_HOURS = 12
"""How long a console session lasts (its own token's lifetime)."""


class CrossSiteRefused(HTTPException):
    """A POST without a valid CSRF token, or from another site."""

    def __init__(self, detail: str) -> None:
        super().__init__(status.HTTP_403_FORBIDDEN, detail=detail)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str

    def grant(self, action: Action) -> Grant | None:
        return grant(self.principal, action)


def open_session(staff: StaffContext, token: str) -> tuple[Principal, str] | None:
    """Sign in with `token`: its principal and a new session token, or None when the
    token does not work."""
    now = staff.clock()
    principal = staff.users.authenticate(token, now)
    if principal is None:
        return None
    expires = now + timedelta(hours=SESSION_HOURS)
    hint = token[:HINT_CHARS]
    for known in staff.users.tokens(principal.name, now):
        if known.hint == hint and known.expires_at is not None:
            expires = min(expires, known.expires_at)
    return principal, staff.users.issue_token(principal.name, now, expires)


def close_session(staff: StaffContext, found: Session, token: str) -> None:
    """Sign out: revoke the session token (by its id; its hint names it)."""
    now = staff.clock()
    hint = token[:HINT_CHARS]
    name = found.principal.name
    for known in staff.users.tokens(name, now):
        if known.hint == hint and known.revoked_at is None:
            staff.users.revoke(name, str(known.id), now)


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def is_tls(request: Request) -> bool:
    """Did the request come over TLS (itself, or by a proxy's X-Forwarded-Proto)?"""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.split(",", 1)[0].strip().lower() == "https"


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=is_tls(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PREFIX, httponly=True, samesite="strict", secure=is_tls(request)
    )


def new_presession() -> str:
    return secrets.token_urlsafe(24)


def current(request: Request, staff: StaffContext) -> Session | None:
    """The signed-in session, or None (no cookie, or a token that no longer works)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    principal = staff.users.authenticate(token, staff.clock())
    if principal is None:
        return None
    return Session(principal, csrf_for(token))


def require(request: Request, staff: StaffContext) -> Session:
    """The session, or a redirect (303) to the sign-in page."""
    found = current(request, staff)
    if found is None:
        raise HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": SIGN_IN_PATH})
    return found


def permit(session: Session, action: Action) -> Grant:
    """The session's grant for `action` (the staff API's policy), or 403."""
    found = session.grant(action)
    if found is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"the {session.principal.role.value} role may not do this",
        )
    return found


def check_origin(request: Request) -> None:
    """Refuse a request a browser marks as coming from another site."""
    fetch_site = request.headers.get("sec-fetch-site", "").lower()
    if fetch_site in {"cross-site", "same-site"}:
        raise CrossSiteRefused("a form of another site may not post here")
    origin = request.headers.get("origin")
    if origin is not None:
        hosts = {request.headers.get("host", "").lower()}
        forwarded = request.headers.get("x-forwarded-host")
        if forwarded:  # a proxy that rewrites Host (a browser's form cannot set this)
            hosts.add(forwarded.split(",", 1)[0].strip().lower())
        if origin == "null" or urlsplit(origin).netloc.lower() not in hosts:
            raise CrossSiteRefused("a form of another origin may not post here")


def check_csrf(request: Request, session: Session, form: dict[str, str]) -> None:
    """A POST of the session: same origin, and the session's CSRF token in the form."""
    check_origin(request)
    sent = form.get(CSRF_FIELD, "")
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise CrossSiteRefused("the form's CSRF token is missing or wrong: reload the page")


def check_presession(request: Request, form: dict[str, str]) -> None:
    """The sign-in form's double-submit token."""
    check_origin(request)
    cookie = request.cookies.get(PRESESSION_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(sent, cookie):
        raise CrossSiteRefused("the sign-in form's token is missing or wrong: reload the page")
