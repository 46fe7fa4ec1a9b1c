"""Security headers on every response (pure ASGI middleware).

Browsers take a Content-Security-Policy's `frame-ancestors` only from a header, never
from a `<meta>` tag, so the policy is sent as a header on every response:

- `PAGE_POLICY`, the default, for the public page and everything else: own scripts,
  styles and fetches only, and no framing (`frame-ancestors 'none'`);
- `DOCS_POLICY` on the interactive API docs (`/api/docs`), whose page loads Swagger UI
  from its CDN and starts it with an inline script; still no framing.

`X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` go on every
response too. A route that sets one of these headers itself keeps its own: the public
page's own policy also lets images come from the map's tile host (`page_policy`), and
the embeddable widget (`embed_policy`) is the one page others may frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_HOST_RE = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_ORIGIN_RE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")


def tile_source(url: str) -> str | None:
    """The CSP source of a tile address (`https://tile.openstreetmap.org`; a `{s}`
    subdomain is `https://*.tile.openstreetmap.org`), None for no tiles; ValueError
    says what is wrong with an address that cannot be one."""
    if url == "":
        return None
    for part in ("{z}", "{x}", "{y}"):
        if part not in url:
            raise ValueError(f"the tile address must hold {{z}}, {{x}} and {{y}}: {url!r}")
    split = urlsplit(url.replace("{s}", "s-sub"))
    if split.scheme not in ("https", "http") or not split.hostname:
        raise ValueError(f"the tile address must be http(s)://host/...: {url!r}")
    if any(ch in url for ch in " ;,'\"") or split.username or split.password:
        raise ValueError(f"the tile address cannot go in a page policy: {url!r}")
    host = split.hostname
    if "{s}" in url:
        if not url.split("://", 1)[1].startswith("{s}."):
            raise ValueError(f"{{s}} may only start the tile host: {url!r}")
        host = "*." + host.removeprefix("s-sub.")
    if not _HOST_RE.match(host):
        raise ValueError(f"the tile host is not a host name: {url!r}")
    port = f":{split.port}" if split.port else ""
    return f"{split.scheme}://{host}{port}"


def check_ancestor(value: str) -> str:
    """`*`, `'self'` or an origin (`https://www.brussels.be`, `https://*.gent.be`)."""
    if value in ("*", "'self'") or _ORIGIN_RE.match(value):
        return value
    raise ValueError(f"an embedding page must be '*', 'self' or an origin, not {value!r}")


def page_policy(tiles: str | None) -> str:
    """The public page's policy: the default one, and images from the tile host."""
    if tiles is None:
        return PAGE_POLICY
    return PAGE_POLICY.replace("img-src 'self' data:", f"img-src 'self' data: {tiles}")


def embed_policy(ancestors: tuple[str, ...]) -> str:
    """The widget's policy: the default one, framed by `ancestors` (`*`: any page)."""
    allowed = " ".join(check_ancestor(a) for a in ancestors) or "'none'"
    return PAGE_POLICY.replace("frame-ancestors 'none'", f"frame-ancestors {allowed}")


COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    def __init__(
        self,
        app: ASGIApp,
        policy: str = PAGE_POLICY,
        path_policies: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.path_policies = dict(path_policies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.path_policies.get(scope.get("path", ""), self.policy)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy)
                for name, value in COMMON.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
