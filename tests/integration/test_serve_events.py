"""`illuminate serve` as a user runs it, with a browser's event stream open: SIGTERM ends
the stream at once (not after the server's graceful timeout) and the process exits.

A real process, real HTTP; the time limits are generous, there only to catch a hang.
"""

from __future__ import annotations

import signal
import time

import httpx

from controller.web.events_route import EVENTS_PATH
from tests.integration.test_serve_limits import GENEROUS_S, Served, served

__all__ = ["served"]


def test_sigterm_ends_an_open_event_stream_at_once_and_stops_the_server(
    served: Served,
) -> None:
    with (
        httpx.Client(base_url=served.http.base_url, timeout=GENEROUS_S) as http,
        http.stream("GET", EVENTS_PATH) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines).startswith("retry: ")
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        # the stream ends whole (its last chunk sent); cut by the server's graceful
        # timeout instead, it would end mid-body, and httpx would raise
        for _ in lines:
            assert time.monotonic() - started < GENEROUS_S, "the stream did not end"
    # a clean stop: the controller stopped too (not killed by the signal raised again)
    assert served.proc.wait(timeout=GENEROUS_S) == 0
