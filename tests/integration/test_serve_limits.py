"""`illuminate serve` as a user runs it: pathological campaigns are refused at once, the
server still stops on SIGTERM, and its SQLite file is owner-only.

Real processes, real HTTP; the time limits are generous, there only to catch a spin.
"""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mosquitto import free_port

GENEROUS_S = 20.0
ILLUMINATE = str(Path(sys.executable).with_name("illuminate"))


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    http: httpx.Client
    token: str
    data_dir: Path


def _campaign(*rules: str) -> dict[str, Any]:
    return {
        "title": {"en": "Blue Heart"},
        "color": "#009EDB",
        "windows": [
            {
                "targets": {"all": True},
                "rrule": rule,
                "start": {"sun": "sunset"},
                "end": {"at": "01:00"},
            }
            for rule in rules
        ],
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    port = free_port()
    config = tmp_path / "illuminate.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n[http]\nport = {port}\n[broker]\nembedded_port = {free_port()}\n'
    )
    made = subprocess.run(
        [ILLUMINATE, "users", "add", "cora", "--role", "coordinator", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=GENEROUS_S,
        check=True,
    )
    token = next(
        line.split(": ", 1)[1] for line in made.stdout.splitlines() if line.startswith("API token")
    )
    proc = subprocess.Popen(
        [ILLUMINATE, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=GENEROUS_S) as http:
            deadline = time.monotonic() + GENEROUS_S
            while True:
                assert proc.poll() is None, "illuminate serve exited"
                assert time.monotonic() < deadline, "illuminate serve did not answer"
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            yield Served(proc, http, token, data_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=GENEROUS_S)


def test_pathological_campaigns_are_refused_and_sigterm_still_stops_the_server(
    served: Served,
) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    for rules, path, words in (
        (("FREQ=DAILY;INTERVAL=0",), "windows[0].rrule", "never advances"),
        (("FREQ=DAILY", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"), "windows[1].rrule", "never occurs"),
        (("FREQ=DAILY",) * 1000, "windows[124]", "more than the limit"),
    ):
        started = time.monotonic()
        response = served.http.put(
            "/api/v1/campaigns/blue-heart", json=_campaign(*rules), headers=auth
        )
        assert time.monotonic() - started < GENEROUS_S
        assert response.status_code == 422, response.text
        item = next((i for i in response.json()["detail"] if i["path"] == path), response.json())
        assert words in item.get("message", ""), item
    assert served.http.get("/api/v1/campaigns", headers=auth).json() == []

    database = served.data_dir / "illuminate.sqlite"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=GENEROUS_S) is not None
