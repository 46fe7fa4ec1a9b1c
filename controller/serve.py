"""Running the web app in the controller's process: one process owns the timer."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from controller.app import Controller
from controller.settings import Settings
from controller.web.events_route import close_streams

GRACEFUL_S = 5
"""On SIGTERM, how long open requests may take to end before they are cancelled."""


class PortInUse(ValueError):
    pass


def check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"cannot listen on {host}:{port} ({exc.strerror}); "
                "set http.port (or ILLUMINATE_HTTP__PORT) to a free port"
            ) from None


def run_http(controller: Controller, settings: Settings) -> int:
    """Serve until Ctrl-C (uvicorn handles the signal), then return."""
    config = uvicorn.Config(
        controller.web,
        host=settings.http.host,
        port=settings.http.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = Server(config, on_exit=lambda: close_streams(controller.web))
    server.run()
    return 0


class Server(uvicorn.Server):
    """uvicorn's server that, on SIGTERM or Ctrl-C, first ends the app's open event
    streams (which would otherwise hold the server's wait for open connections)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
        # uvicorn raises a captured signal again once it has shut down, which for
        # SIGTERM would end the process before the controller stops (its offline
        # status, the run's end, the last-known copy): SIGTERM is handled here, and
        # `run` returns as it does on Ctrl-C
        if sig == signal.SIGTERM:
            self._captured_signals = [s for s in self._captured_signals if s != sig]
