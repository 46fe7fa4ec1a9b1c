"""The `live-fanout` scenario: N third-party lights (WLED) sent a live command at a
window's opening, from the instant until every command is stored APPLIED.

A run of its own, after the native scenarios: its own Mosquitto, database and
controller, N WLED devices registered (`adapter: wled`, one per site) and answered by
`bench.wled_fleet` processes (one per shard). The controller sends each its command at
the window's start (`controller/live.py`) and confirms it from the device's own `/g`
and `/c` reports (`devices/adapters/wled.py`).

Floor: a bare client publishes the same N commands (QoS 1) to N other ids the same
fleet answers, and a bare observer waits for every `/c` reply.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.e2e import WINDOW, Options, Progress, Rig, _mono_of, _whole_second
from bench.fleet import COLOR, LEVEL, catalog, site_id, window_campaign
from bench.mqtt import client, connect
from bench.report import row
from controller.store.base import NewDevice
from controller.store.sql import database
from devices.adapters import adapter_for
from devices.clock import system_clock
from devices.protocol import LightState
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto

FLOOR_PREFIX = "floor-"


def wled_topic(device_id: str) -> str:
    return f"wled/{device_id}"


def register_wled(db_url: str, ids: list[str]) -> None:
    with database(db_url) as (_, _, stores):
        stores.registry.import_catalog(catalog(len(ids)))
        stores.registry.add_devices(
            [
                NewDevice(d, site_id(i), None, adapter="wled", config={"topic": wled_topic(d)})
                for i, d in enumerate(ids)
            ],
            system_clock(),
        )


def command_payload() -> bytes:
    """The live command the controller sends for the window (the floor sends the same)."""
    adapter = adapter_for("wled", {"topic": wled_topic("floor")})
    (command,) = adapter.command(LightState(on=True, color=COLOR, level=LEVEL))
    return command.payload


class ReplyWatch:
    """Counts the fleet's `/c` replies of the floor ids, with when the last came."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.seen: set[str] = set()
        self.last = 0.0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = client("bench-live-watch", CONTROLLER_USER, CONTROLLER_PASSWORD)
        self.client.on_connect = lambda c, *_a: c.subscribe("wled/+/c", 0)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[1]
        if not device.startswith(FLOOR_PREFIX):
            return  # a registered light answering the controller
        with self._lock:
            self.seen.add(device)
            self.last = time.monotonic()

    def start(self) -> None:
        connect(self.client, self.host, self.port)
        if not self._subscribed.wait(30):
            raise RuntimeError("the reply watch could not subscribe")

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def live_floor(rig: Rig, n: int) -> float | None:
    assert rig.broker is not None
    watch = ReplyWatch("127.0.0.1", rig.broker.port)
    watch.start()
    sender = client("bench-live-floor", CONTROLLER_USER, CONTROLLER_PASSWORD)
    sender.max_inflight_messages_set(1000)
    sender.max_queued_messages_set(0)
    connect(sender, "127.0.0.1", rig.broker.port)
    payload = command_payload()
    try:
        start = time.monotonic()
        for i in range(n):
            sender.publish(f"wled/{FLOOR_PREFIX}{i:05d}/api", payload, qos=1)
        done = rig.wait(watch.count, n, "floor replies", rig.deadline())
        return (watch.last - start) if done else None
    finally:
        sender.disconnect()
        sender.loop_stop()
        watch.stop()


def online_in_db(rig: Rig) -> int:
    with rig.db() as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM devices WHERE online = 1").fetchone()
    return int(count)


def settled_in_db(rig: Rig) -> int:
    """Devices whose newest command is settled: no command of theirs is still waiting to
    be published or confirmed (the lights' first command, "off", sent at start-up)."""
    with rig.db() as conn:
        (open_,) = conn.execute(
            "SELECT COUNT(DISTINCT device_id) FROM commands WHERE state IN ('pending', 'published')"
        ).fetchone()
    return rig.n - int(open_)


def _ready(ready: set[int], index: int, line: str) -> None:
    if line == "ready":
        ready.add(index)


def start_wled_fleet(rig: Rig) -> None:
    assert rig.broker is not None
    ready: set[int] = set()
    for shard in rig.shards:
        rig.children.start(
            f"wled-fleet-{shard.index}",
            [
                sys.executable,
                "-m",
                "bench.wled_fleet",
                *("--port", str(rig.broker.port)),
                *("--username", CONTROLLER_USER, "--password", CONTROLLER_PASSWORD),
                *("--count", str(len(shard.ids)), "--prefix", shard.prefix),
                *("--name", f"bench-wled-fleet-{shard.index:02d}"),
            ],
            log=rig.workdir / f"wled-fleet-{shard.index}.log",
            on_line=functools.partial(_ready, ready, shard.index),
        )
    if not rig.wait(lambda: len(ready), len(rig.shards), "WLED fleets ready", rig.deadline()):
        raise RuntimeError("the WLED fleet did not start")


def run_live(opts: Options, workdir: Path, rows: list[dict[str, Any]]) -> None:
    """The live-fanout scenario, in a run of its own (see the module)."""
    print(f"  live-fanout: {opts.devices} WLED lights, a run of their own", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    rig = Rig(opts, workdir, rows)
    try:
        rig.broker = Mosquitto(workdir / "mosquitto").start()
        register_wled(f"sqlite:///{rig.db_path}", rig.device_ids)
        rig.write_config()
        rig.start_controller()
        start_wled_fleet(rig)
        if not rig.wait(lambda: online_in_db(rig), rig.n, "lights online", rig.deadline()):
            raise RuntimeError("the controller did not see every light online")
        # the campaign comes to a fleet at rest: the start-up commands confirmed, so the
        # scenario measures the window's opening, not the start-up's tail
        if not rig.wait(lambda: settled_in_db(rig), rig.n, "lights settled", rig.deadline()):
            raise RuntimeError("the lights' start-up commands did not settle")
        opens = _whole_second(max(opts.min_lead_s, 5.0))
        rig.put_campaign(window_campaign(opens, WINDOW))
        step = _mono_of(opens)
        while time.monotonic() < step:
            time.sleep(min(0.05, max(0.0, step - time.monotonic())))
        progress = Progress("live commands APPLIED", rig.n)
        applied, db_at = 0, None
        deadline = rig.deadline()
        while time.monotonic() < deadline:
            rig.children.check_alive()
            applied = rig.applied_in_db(opens)
            progress(applied)
            if applied >= rig.n:
                db_at = time.monotonic()
                break
            time.sleep(0.05)
        print(f"  live-fanout floor: {rig.n} commands to the same fleet", flush=True)
        floor = live_floor(rig, rig.n)
        rows.append(
            row(
                "live-fanout",
                rig.n,
                None if db_at is None else db_at - step,
                floor,
                done=applied,
                timed_out=None if db_at is not None else True,
                command_bytes=len(command_payload()),
            )
        )
    finally:
        rig.stop()
