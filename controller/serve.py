"""Running the web app in the controller's process: one process owns the timer."""

from __future__ import annotations

import socket

import uvicorn

from controller.app import Controller
from controller.settings import Settings


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
    )
    server = uvicorn.Server(config)
    server.run()
    return 0
