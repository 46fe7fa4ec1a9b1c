"""The public status keeps answering across a restart of a real `illuminate serve`
process: the restarted process answers at once with the last-known copy (the same
bytes, its as-of time in `Illuminate-As-Of`, an ETag of its own), while the broker link
is not up yet, and the live document once it is; it never answers 503 "starting".

Mosquitto is stopped across the first restart, so the restarted controller cannot hear
from the broker: that is what holds the last-known copy in place (for at most
health.public_hold_s, set long here), not the speed of the machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from controller.last_known import FILE_NAME
from controller.public_view import last_known_etag
from controller.web.status_route import AS_OF_HEADER
from tests.integration.conftest import DEADLINE, catalog, wait_until
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto, free_port
from tests.support.stores import data_dir_database

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ILLUMINATE = str(Path(sys.executable).with_name("illuminate"))
STATUS = "/api/v1/public/status"


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Server:
    """`illuminate serve --config FILE`, started and stopped as an operator would."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [ILLUMINATE, "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE)
        self.proc = None

    def first_answer(self, http: httpx.Client, **headers: str) -> httpx.Response:
        """The first answer to a status poll (polling while nothing listens yet)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            assert self.proc is not None and self.proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "illuminate serve did not answer"
            try:
                return http.get(STATUS, headers=headers)
            except httpx.TransportError:
                time.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    with data_dir_database(data_dir) as (_, _, stores):
        stores.registry.import_catalog(catalog(3))
    port = free_port()
    config = tmp_path / "illuminate.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        f"[http]\nport = {port}\n"
        f'[broker]\nurl = "{mosquitto.url}"\n'
        f'username = "{CONTROLLER_USER}"\npassword = "{CONTROLLER_PASSWORD}"\n'
        "[health]\npublic_hold_s = 600\n"
    )
    served = Server(config, port)
    try:
        yield served
    finally:
        served.stop()


def test_the_restarted_server_answers_with_the_last_known_copy_then_the_live_one(
    server: Server, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    saved = tmp_path / "data" / FILE_NAME
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=DEADLINE) as http:
        server.start()
        first = server.first_answer(http)
        assert first.status_code in (200, 503)
        assert AS_OF_HEADER.lower() not in first.headers  # nothing was saved before
        assert wait_until(lambda: http.get(STATUS).status_code == 200, timeout=DEADLINE)
        live = http.get(STATUS, headers={"Accept-Encoding": "identity"})
        assert AS_OF_HEADER.lower() not in live.headers
        assert wait_until(saved.exists, timeout=DEADLINE)

        mosquitto.stop()  # the restarted controller will not reach the broker
        server.stop()
        stopped_at = datetime.now(UTC)
        server.start()
        copy = server.first_answer(http, **{"Accept-Encoding": "identity"})
        assert copy.status_code == 200
        assert copy.content == live.content  # the same bytes, with their generated_at
        assert copy.headers["etag"] == last_known_etag(live.headers["etag"])
        as_of = copy.headers[AS_OF_HEADER]
        assert instant(live.json()["generated_at"]) <= instant(as_of) <= stopped_at
        assert copy.headers["cache-control"] == "no-cache"
        # a client holding the live document gets the copy, and learns it is one
        held = http.get(STATUS, headers={"If-None-Match": live.headers["etag"]})
        assert (held.status_code, held.headers[AS_OF_HEADER]) == (200, as_of)
        assert http.get("/").status_code == 200  # the page itself
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]["broker"]) == (503, False)

        mosquitto.start(write_passwords=False)  # the same port: the link comes up
        assert wait_until(
            lambda: AS_OF_HEADER.lower() not in http.get(STATUS).headers, timeout=DEADLINE
        )
        again = http.get(STATUS, headers={"If-None-Match": copy.headers["etag"]})
        assert again.status_code == 200
        assert again.headers["etag"] == live.headers["etag"]  # nothing changed meanwhile
        assert instant(again.json()["generated_at"]) > instant(live.json()["generated_at"])
        assert wait_until(lambda: http.get("/readyz").status_code == 200, timeout=DEADLINE)

        # restarted with the broker up: the first answer is a document (the copy, or
        # already the live one), never 503 "starting"
        server.stop()
        server.start()
        assert server.first_answer(http).status_code == 200
