"""`GET /api/v1/public/events`: the public status as a stream of server-sent events.

Each event is the whole public status document (`event: status`, `data:` the same JSON
as `GET /api/v1/public/status`, in `?lang=`), with `id:` its ETag. It is sent when the
stream opens, unless `Last-Event-ID` already names the current ETag (a client that
reconnects after missing nothing gets nothing twice), and then whenever the public view
is rendered again with a different ETag. Nothing is computed or read per client: the
public view calls `PublicEvents.changed` after each build that changed a rendering
(`PublicView.subscribe`), which wakes every open stream, and each sends the rendering
already made. A comment line (`: keep-alive`) goes out every `keepalive_s` so that
proxies keep the connection and a dead client is noticed; `retry:` tells the browser
how long to wait before it reconnects.

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


@dataclass(eq=False)
class _Client:
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False


def status_event(rendering: Rendering) -> bytes:
    """One `status` event: the document's lines as `data:` lines, its ETag as `id:`."""
    lines = rendering.body.decode("utf-8").splitlines() or [""]
    data = "".join(f"data: {line}\n" for line in lines)
    return f"id: {rendering.etag}\nevent: status\n{data}\n".encode()


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
        """Status events sent, to every client (a measure for tests and metrics)."""
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
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
        sent = last_id
        while not self.closed and not client.gone:
            client.wake.clear()
            rendering = self.public.get(lang)
            if rendering is not None and rendering.etag != sent:
                sent = rendering.etag
                self.sent += 1
                yield status_event(rendering)
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
