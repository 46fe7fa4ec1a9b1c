"""`GET /api/v1/public/events`: the public status as a stream of server-sent events.

Two kinds of event, each with `id:` the ETag of the public status it brings the
client to (`?lang=` as for `GET /api/v1/public/status`):

- `status`: the whole document, the same JSON as `GET /api/v1/public/status`. Sent
  when the stream opens, unless `Last-Event-ID` already names the current ETag (a
  client that reconnects after missing nothing gets nothing twice).
- `change`: what changed since the client's last event, when that is smaller than the
  document: `generated_at`, `summary`, the sites added or changed (each whole) and the
  ids of the sites `removed` (`status_change`). Sent whenever the public view is
  rendered again with a different ETag, and on a reconnect whose `Last-Event-ID` is one
  of the last few documents; otherwise the `status` event is sent instead.

Nothing is computed or read per client: the public view calls `PublicEvents.changed`
after each build that changed a rendering (`PublicView.subscribe`), which wakes every
open stream, and each sends the events already made (a `change` is made once, by the
first client that needs it, and kept for the others). A comment line (`: keep-alive`)
goes out every `keepalive_s` so that proxies keep the connection and a dead client is
noticed; `retry:` tells the browser how long to wait before it reconnects.

Each stream is a coroutine on the server's event loop (no thread per client). At most
`max_clients` are open at once; one more gets a 503 with Retry-After. `close()` ends
every stream (the server calls it on SIGTERM or Ctrl-C, see `controller/serve.py`, so
its wait for open connections is short) and refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import orjson
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge
from starlette.types import Receive, Scope, Send

from controller.public_view import PublicView, Rendering
from controller.web.api import Problem

EVENTS_PATH = "/api/v1/public/events"
MAX_CLIENTS = 1000
KEEPALIVE_S = 15.0
RETRY_MS = 5000
BUSY_RETRY_S = 30
EVENTS_CACHE = "no-store"
KEEP_RENDERINGS = 4
"""Per language, the renderings a `change` event may start from."""


@dataclass(eq=False)
class _Client:
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False


def sse_event(kind: str, event_id: str, body: bytes) -> bytes:
    """One event: `body`'s lines as `data:` lines, `event_id` as `id:`."""
    lines = body.decode("utf-8").splitlines() or [""]
    data = "".join(f"data: {line}\n" for line in lines)
    return f"id: {event_id}\nevent: {kind}\n{data}\n".encode()


def status_event(rendering: Rendering) -> bytes:
    """The `status` event: the whole document."""
    return sse_event("status", rendering.etag, rendering.body)


def status_change(before: bytes, after: bytes) -> bytes | None:
    """What changed from one public status document to the next: `generated_at`,
    `summary`, the sites added or changed (whole) and the ids of the sites `removed`.
    None when that is not smaller than the document itself."""
    old, new = orjson.loads(before), orjson.loads(after)
    old_sites = {site["id"]: site for site in old["sites"]}
    new_ids = {site["id"] for site in new["sites"]}
    body = orjson.dumps(
        {
            "generated_at": new["generated_at"],
            "summary": new["summary"],
            "sites": [site for site in new["sites"] if old_sites.get(site["id"]) != site],
            "removed": [site_id for site_id in old_sites if site_id not in new_ids],
        }
    )
    return body if len(body) < len(after) else None


@dataclass
class _Events:
    """The events made for one language: the last few renderings' `status` events, and
    the `change` events between them (made once, sent to every client)."""

    full: dict[str, bytes] = field(default_factory=dict)
    """ETag -> the `status` event, for the last `KEEP_RENDERINGS` renderings."""
    bodies: dict[str, bytes] = field(default_factory=dict)
    changes: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def status(self, rendering: Rendering) -> bytes:
        found = self.full.get(rendering.etag)
        if found is None:
            if len(self.full) >= KEEP_RENDERINGS:
                oldest = next(iter(self.full))
                del self.full[oldest], self.bodies[oldest]
                self.changes = {k: v for k, v in self.changes.items() if oldest not in k}
            found = self.full[rendering.etag] = status_event(rendering)
            self.bodies[rendering.etag] = rendering.body
        return found

    def change(self, since: str, rendering: Rendering) -> bytes | None:
        """The `change` event from the document `since` to `rendering`, when `since` is
        one of the last few (else None: send the whole document)."""
        key = (since, rendering.etag)
        found = self.changes.get(key)
        if found is None:
            before = self.bodies.get(since)
            if before is None:
                return None
            body = status_change(before, rendering.body)
            found = self.changes[key] = (
                b"" if body is None else sse_event("change", rendering.etag, body)
            )
        return found or None


class PublicEvents:
    """The open streams, woken by the public view."""

    def __init__(
        self,
        public: PublicView,
        *,
        max_clients: int = MAX_CLIENTS,
        keepalive_s: float = KEEPALIVE_S,
        retry_ms: int = RETRY_MS,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.public = public
        self.max_clients = max_clients
        self.keepalive_s = keepalive_s
        self.retry_ms = retry_ms
        self.closed = False
        self.refused = 0
        """Clients turned away (the streams were full or closed)."""
        self.sent = 0
        """Events sent (`status` or `change`), to every client."""
        self._clients: set[_Client] = set()
        self._lock = threading.RLock()  # `close` may run in a signal handler meanwhile
        self._events: dict[str, _Events] = {}  # by language; used on the event loop only
        public.subscribe(self.changed)

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._clients)

    def _wake_all(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(RuntimeError):  # its loop is closed: it is gone
                client.loop.call_soon_threadsafe(client.wake.set)

    def changed(self) -> None:
        """The public view has a new rendering (any thread)."""
        self._wake_all()

    def close(self) -> None:
        """End every stream and refuse new ones (any thread, a signal handler too)."""
        self.closed = True
        self._wake_all()

    def join(self) -> _Client | None:
        """A place for one more client, or None when the streams are full or closed."""
        with self._lock:
            if self.closed or len(self._clients) >= self.max_clients:
                self.refused += 1
                return None
            client = _Client(asyncio.get_running_loop())
            self._clients.add(client)
            return client

    def leave(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    async def events(
        self, client: _Client, lang: str | None, last_id: str | None
    ) -> AsyncIterator[bytes]:
        """What one client is sent, until it leaves or the streams close."""
        yield f"retry: {self.retry_ms}\n\n".encode()
        language = self.public.language(lang)
        made = self._events.setdefault(language, _Events())
        sent = last_id
        while not self.closed and not client.gone:
            client.wake.clear()
            rendering = self.public.get(language)
            if rendering is not None and rendering.etag != sent:
                whole = made.status(rendering)
                event = made.change(sent, rendering) if sent is not None else None
                sent = rendering.etag
                self.sent += 1
                yield whole if event is None else event
                continue
            try:
                await asyncio.wait_for(client.wake.wait(), self.keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"


class EventStream(Response):
    """The open stream of one client: a plain ASGI answer that leaves its place among
    the clients however it ends (the client goes, the streams close, a send fails)."""

    media_type = "text/event-stream"

    def __init__(
        self, hub: PublicEvents, client: _Client, lang: str | None, last_id: str | None
    ) -> None:
        super().__init__(
            headers={
                "Cache-Control": EVENTS_CACHE,
                "X-Accel-Buffering": "no",  # a buffering proxy passes each event at once
            },
            media_type="text/event-stream; charset=utf-8",
        )
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.hub = hub
        self.client = client
        self.lang = lang
        self.last_id = last_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client

        async def listen() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server could not read from the client: it is gone
                pass
            client.gone = True
            client.wake.set()

        listener = asyncio.create_task(listen())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.hub.events(client, self.lang, self.last_id):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not client.gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-send
        finally:
            listener.cancel()
            self.hub.leave(client)


def instrument(hub: PublicEvents, registry: CollectorRegistry) -> None:
    """`illuminate_public_streams` (open now) and `illuminate_public_streams_refused`
    (turned away so far) on `registry`, read from `hub` when scraped."""
    open_now = Gauge("illuminate_public_streams", "Open public event streams", registry=registry)
    open_now.set_function(lambda: hub.open)
    refused = Gauge(
        "illuminate_public_streams_refused",
        "Public event streams refused (too many open, or stopping) since the start",
        registry=registry,
    )
    refused.set_function(lambda: hub.refused)


def close_streams(app: FastAPI) -> None:
    """End the app's event streams (before the server waits for open connections)."""
    hub = getattr(app.state, "public_events", None)
    if isinstance(hub, PublicEvents):
        hub.close()


def build_events_route(hub: PublicEvents) -> APIRouter:
    router = APIRouter(tags=["public"])

    @router.get(
        EVENTS_PATH,
        response_class=Response,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "a stream of `status` events (the public status JSON), "
                "with `id:` its ETag, and keep-alive comments",
            },
            503: {"model": Problem, "description": "too many open streams (or stopping)"},
        },
    )
    async def public_events(
        request: Request,
        lang: Annotated[str | None, Query(description="language (en, fr, nl, de)")] = None,
        last_event_id: Annotated[
            str | None, Header(description="the id of the last event received")
        ] = None,
    ) -> Response:
        """The public status, pushed whenever it changes (server-sent events)."""
        client = hub.join()
        if client is None:
            busy = "the server is stopping" if hub.closed else "too many open event streams"
            return JSONResponse(
                {"detail": f"{busy}; try again later"},
                status_code=503,
                headers={"Retry-After": str(BUSY_RETRY_S), "Cache-Control": "no-store"},
            )
        return EventStream(hub, client, lang, last_event_id)

    return router
