"""A request body size limit for the whole web app (pure ASGI middleware).

Add it with `app.add_middleware(BodySizeLimit, max_bytes=...)`; `path_limits` maps an
exact path to its own limit (a bulk route that needs more, say). A declared
Content-Length over the limit is refused with 413 before the app runs (the body is never
read); a body without one (chunked) is counted as it streams, and the read that crosses
the limit raises `BodyTooLarge`, which becomes a 413.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 256 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body is larger than the limit of {limit} bytes",
            headers={"Connection": "close"},
        )


class BodySizeLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.path_limits = dict(path_limits or {})
        if max_bytes < 0 or any(v < 0 for v in self.path_limits.values()):
            raise ValueError("max_bytes must not be negative")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        try:
            declared = _content_length(scope)
        except ValueError:
            await _refuse(scope, receive, send, 400, "invalid Content-Length header")
            return
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, 413, BodyTooLarge(limit).detail)
            return

        received = 0
        exceeded = False
        started = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if answered:
                return  # we already sent the 413; drop whatever the app says after it
            if message["type"] == "http.response.start":
                if exceeded and message["status"] != 413:
                    # The app swallowed BodyTooLarge and answered something else.
                    answered = True
                    await _refuse(scope, receive, send, 413, BodyTooLarge(limit).detail)
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge as exc:
            if started or answered:
                raise
            await _refuse(scope, receive, send, 413, exc.detail)


def _content_length(scope: Scope) -> int | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
    if not values:
        return None
    lengths = set()
    for value in values:
        text = value.decode("latin-1").strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(text)
        lengths.add(int(text))
    if len(lengths) != 1:
        raise ValueError("conflicting Content-Length headers")
    return lengths.pop()


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
