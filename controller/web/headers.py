"""Security headers on every response (pure ASGI middleware).

Browsers take a Content-Security-Policy's `frame-ancestors` only from a header, never
from a `<meta>` tag, so the policy is sent as a header on every response:

- `PAGE_POLICY`, the default, for the public page and everything else: own scripts,
  styles and fetches only, and no framing (`frame-ancestors 'none'`);
- `DOCS_POLICY` on the interactive API docs (`/api/docs`), whose page loads Swagger UI
  from its CDN and starts it with an inline script; still no framing.

`X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` go on every
response too. A route that sets one of these headers itself keeps its own (an embed
route that may be framed would set its own `frame-ancestors`).
"""

from __future__ import annotations

from collections.abc import Mapping

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
