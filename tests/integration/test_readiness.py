"""/readyz and /metrics tell the truth, over real HTTP, with a real Mosquitto, real
devices and a real database (SQLite and PostgreSQL):

- while another connection holds the database's write lock, /readyz answers at once
  with "not ready" (the intake's batch waits behind the lock, and the backlog and its
  age show on /metrics, then fail readiness too), and "ready" once it is released;
- while the broker is down, /readyz says "not ready", and "ready" once it is back;
- /metrics counts the registered devices and those offline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest

from controller.settings import DatabaseSettings, HealthSettings
from tests.controller.test_staff_api import serve
from tests.integration.conftest import (
    DEADLINE,
    Rig,
    catalog,
    devices_for,
    make_settings,
    wait_until,
    whole_second,
    window_campaign,
)
from tests.support.databases import postgres_database
from tests.support.mosquitto import Mosquitto
from tests.support.stores import SQL_KINDS

pytestmark = pytest.mark.broker

N = 3
HEALTH = HealthSettings(database_timeout_s=0.5, backlog_age_s=2.0)


def metrics(http: httpx.Client) -> dict[str, float]:
    """One scrape of /metrics: sample name -> value (unlabelled samples)."""
    out = {}
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if not line.startswith("#") and "{" not in name:
            out[name] = float(value)
    return out


def metric(http: httpx.Client, name: str) -> float | None:
    return metrics(http).get(name)


def quiet(http: httpx.Client) -> bool:
    """Nothing received is left unstored, and then the oldest's age is 0 too."""
    found = metrics(http)
    return (found["illuminate_intake_backlog"], found["illuminate_intake_oldest_age_seconds"]) == (
        0,
        0,
    )


def checks(http: httpx.Client) -> tuple[int, dict[str, bool]]:
    response = http.get("/readyz")
    return response.status_code, response.json()["checks"]


ALL_READY = (200, {"database": True, "broker": True, "intake": True})


@contextmanager
def running(
    tmp_path: Path, mosquitto: Mosquitto, database_url: str | None
) -> Iterator[tuple[Rig, httpx.Client]]:
    devices = devices_for(N)
    mosquitto.add_users({d.id: d.password for d in devices})
    settings = make_settings(tmp_path, mosquitto.url)
    settings = settings.model_copy(
        update={"database": DatabaseSettings(url=database_url), "health": HEALTH}
    )
    rig = Rig(settings, catalog(N), devices)
    try:
        controller = rig.start_controller()
        opens = whole_second(2)
        rig.register(window_campaign(opens, opens + timedelta(minutes=10)))
        rig.start_fleet()
        with serve(controller.web) as http:
            yield rig, http
    finally:
        rig.stop()


@pytest.fixture(params=SQL_KINDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the default: SQLite in the data folder
        return
    with postgres_database() as url:
        yield url


@contextmanager
def writer_lock(rig: Rig, database_url: str | None) -> Iterator[None]:
    """Hold, from a connection of the test's own, the lock a writer needs."""
    if database_url is None:
        holder = sqlite3.connect(rig.settings.data_dir / "illuminate.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        pg.execute("LOCK TABLE devices IN SHARE MODE")  # readers read; writers wait
        try:
            yield
        finally:
            pg.rollback()


def say_offline(mosquitto: Mosquitto, device_id: str, password: str) -> None:
    """Publish a device's own 'offline' status, as its last will would."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{device_id}-will")
    client.username_pw_set(device_id, password)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        info = client.publish(
            f"illuminate/v1/devices/{device_id}/status", b'{"v":1,"online":false}', 1, True
        )
        info.wait_for_publish(timeout=DEADLINE)
    finally:
        client.disconnect()
        client.loop_stop()


def test_readyz_fails_while_the_database_is_locked_and_recovers(
    tmp_path: Path, mosquitto: Mosquitto, database_url: str | None
) -> None:
    with running(tmp_path, mosquitto, database_url) as (rig, http):
        assert wait_until(lambda: checks(http) == ALL_READY, timeout=DEADLINE)
        assert wait_until(lambda: metric(http, "illuminate_devices") == N, timeout=DEADLINE)
        assert wait_until(lambda: metric(http, "illuminate_devices_offline") == 0, DEADLINE)
        assert wait_until(lambda: quiet(http), timeout=DEADLINE)  # the plans' acks are in

        with writer_lock(rig, database_url):
            # answered (the client waits at most 10 s), and not ready
            status, found = checks(http)
            assert (status, found["database"]) == (503, False)
            # a report that must be written waits behind the lock: backlog, then too old
            device = rig.devices[0]
            say_offline(mosquitto, device.id, device.password)
            assert wait_until(
                lambda: (metric(http, "illuminate_intake_backlog") or 0) >= 1, DEADLINE
            )
            assert wait_until(
                lambda: (
                    (metric(http, "illuminate_intake_oldest_age_seconds") or 0)
                    > HEALTH.backlog_age_s
                ),
                DEADLINE,
            )
            status, found = checks(http)
            assert (status, found) == (503, {"database": False, "broker": True, "intake": False})

        assert wait_until(lambda: checks(http) == ALL_READY, timeout=DEADLINE)
        assert wait_until(lambda: quiet(http), timeout=DEADLINE)
        # (the report sent under the lock may be stored, or let go as unstorable if it
        # failed alone: either way not backlog any more); the whole fleet says offline
        for device in rig.devices:
            say_offline(mosquitto, device.id, device.password)
        assert wait_until(lambda: metric(http, "illuminate_devices_offline") == N, DEADLINE)
        assert metric(http, "illuminate_devices") == N


def test_readyz_fails_while_the_broker_is_down_and_recovers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with running(tmp_path, mosquitto, None) as (_rig, http):
        assert wait_until(lambda: checks(http) == ALL_READY, timeout=DEADLINE)
        mosquitto.stop()
        expected: tuple[int, dict[str, Any]] = (
            503,
            {"database": True, "broker": False, "intake": True},
        )
        assert wait_until(lambda: checks(http) == expected, timeout=DEADLINE)
        assert metric(http, "illuminate_broker_connected") == 0
        mosquitto.start(write_passwords=False)  # the same port
        assert wait_until(lambda: checks(http) == ALL_READY, timeout=DEADLINE)
        assert metric(http, "illuminate_broker_connected") == 1
