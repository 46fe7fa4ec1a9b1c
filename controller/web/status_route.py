"""The public status answered as a lookup, before the web framework sees the request.

`GET /api/v1/public/status` is the one route the public hammers. Its answer is already
rendered (`PublicView`: body, gzip copy, ETag), so this ASGI middleware answers it
directly: a 304 when If-None-Match names the ETag, else the gzip or plain bytes, with
the same headers the documented route sends (`status_headers`) and the security headers
every response carries. Anything else, a HEAD, and the 503 before the first rendering go
on to the app, whose route is the documented one.

Caching (docs/operations.md, "Behind a CDN"): a live answer may be kept 5 s by a
browser and 10 s by a shared cache, served stale for 30 s while it is fetched again,
and for 10 minutes while the controller cannot be reached (`stale-if-error`: a CDN
bridges a restart). The last-known copy served after a restart, before the first
build, says so in `Illuminate-As-Of` (the time it was last known to be current) and
is kept by no cache: the live document replaces it as soon as it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from controller.public_view import PublicView, Rendering
from controller.web.headers import COMMON, PAGE_POLICY
from devices.protocol import format_instant

STATUS_PATH = "/api/v1/public/status"
PUBLIC_CACHE = "public, max-age=5, s-maxage=10, stale-while-revalidate=30, stale-if-error=600"
LAST_KNOWN_CACHE = "no-cache"
AS_OF_HEADER = "Illuminate-As-Of"
MAX_KEPT = 64
"""Renderings whose encoded answers are kept (one per language is current)."""


def accepts_gzip(accept_encoding: str) -> bool:
    """Does an Accept-Encoding header take gzip (by name or `*`, with q above 0)?"""
    for part in accept_encoding.lower().split(","):
        name, _, params = part.partition(";")
        if name.strip() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        return True
    return False


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Does an If-None-Match header name `etag` (or `*`)? Weak tags compare as weak."""
    if if_none_match == etag:
        return True
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag in (etag, "*", f"W/{etag}"):
            return True
    return False


def status_headers(rendering: Rendering) -> dict[str, str]:
    """The headers of every status answer (200 and 304), as the route sends them."""
    if rendering.as_of is None:
        return {"ETag": rendering.etag, "Cache-Control": PUBLIC_CACHE, "Vary": "Accept-Encoding"}
    return {
        "ETag": rendering.etag,
        "Cache-Control": LAST_KNOWN_CACHE,
        "Vary": "Accept-Encoding",
        AS_OF_HEADER: format_instant(rendering.as_of),
    }


_SECURITY = [
    (b"content-security-policy", PAGE_POLICY.encode()),
    *((k.lower().encode(), v.encode()) for k, v in COMMON.items()),
]


@dataclass(frozen=True)
class _Answers:
    """The three answers of one rendering, headers encoded once: 304, 200, 200 gzip."""

    rendering: Rendering
    not_modified: list[tuple[bytes, bytes]]
    plain: list[tuple[bytes, bytes]]
    gzipped: list[tuple[bytes, bytes]]
    etag: bytes

    @classmethod
    def of(cls, rendering: Rendering) -> _Answers:
        common = [(k.lower().encode(), v.encode()) for k, v in status_headers(rendering).items()]
        common += _SECURITY

        def sized(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
            return [
                *common,
                *extra,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]

        return cls(
            rendering,
            common,
            sized(rendering.body),
            sized(rendering.gzip, (b"content-encoding", b"gzip")),
            rendering.etag.encode("latin-1"),
        )


class PublicStatusRoute:
    def __init__(self, app: ASGIApp, public: PublicView, path: str = STATUS_PATH) -> None:
        self.app = app
        self.public = public
        self.path = path
        self._answers: dict[int, _Answers] = {}
        """By the id of the rendering they were made for (checked on use: the rendering
        itself is kept, so its id is not reused while it is here)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.path:
            lang = None
            if scope.get("query_string"):
                values = parse_qs(scope["query_string"].decode("latin-1")).get("lang")
                lang = values[-1] if values else None
            rendering = self.public.get(lang)
            if rendering is not None:
                await self._answer(scope, self._answers_for(rendering), send)
                return
        await self.app(scope, receive, send)

    def _answers_for(self, rendering: Rendering) -> _Answers:
        found = self._answers.get(id(rendering))
        if found is None or found.rendering is not rendering:
            found = _Answers.of(rendering)
            if len(self._answers) >= MAX_KEPT:  # old renderings: let them go
                self._answers.clear()
            self._answers[id(rendering)] = found
        return found

    async def _answer(self, scope: Scope, answers: _Answers, send: Send) -> None:
        if_none_match = accept_encoding = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"accept-encoding":
                accept_encoding = value
        if if_none_match is not None and (
            if_none_match == answers.etag
            or etag_matches(if_none_match.decode("latin-1"), answers.rendering.etag)
        ):
            await send(
                {"type": "http.response.start", "status": 304, "headers": answers.not_modified}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if accept_encoding is not None and accepts_gzip(accept_encoding.decode("latin-1")):
            headers, body = answers.gzipped, answers.rendering.gzip
        else:
            headers, body = answers.plain, answers.rendering.body
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
