"""`flood`: one device floods the controller while another keeps reporting.

A bare client logged in as one device publishes `--flood-rate` state reports a second
(QoS 0, as fast as the rate allows) for `--flood-seconds`. Meanwhile a second bare
client, logged in as another device, sends one state report a second with a new
`reported_at`; each probe is timed from its publish until the controller has stored it
(`devices.reported_at`, read-only). The floor is the same probe's trip through the
broker to a bare observer under the same flood. Both reports carry the output the device
last applied, so the public page does not change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.mqtt import ROOT, client, connect

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 30.0
BURSTS_PER_S = 100


@dataclass
class FloodResult:
    sent: int = 0
    seconds: float = 0.0
    stored_s: list[float] = field(default_factory=list)
    seen_s: list[float] = field(default_factory=list)
    lost: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _report(held: dict[str, Any], at: datetime) -> bytes:
    return json.dumps({"v": 1, **held, "reported_at": _iso(at)}).encode()


def _held(db: Path, device: str) -> dict[str, Any]:
    """What the device last applied, as its state report says it: output, plan version
    and step (so the reports are true, and ask the controller for nothing)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute(
            "SELECT applied_state, applied_version, applied_step_at FROM devices WHERE id = ?",
            (device,),
        ).fetchone()
    state, version, step_at = row if row else (None, None, None)
    if isinstance(state, str):
        state = json.loads(state)
    held: dict[str, Any] = {"state": state if isinstance(state, dict) else {"on": False}}
    if version is not None and step_at is not None:
        at = datetime.fromisoformat(step_at)
        held["plan_version"] = int(version)
        held["step_at"] = _iso(at if at.tzinfo else at.replace(tzinfo=UTC))
    return held


def _stored_at(db: Path, device: str) -> datetime | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute("SELECT reported_at FROM devices WHERE id = ?", (device,)).fetchone()
    if not row or row[0] is None:
        return None
    at = datetime.fromisoformat(row[0])
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def flood(
    host: str,
    port: int,
    db: Path,
    flooder: str,
    probe: str,
    password: str,
    observer_login: tuple[str, str],
    rate: int,
    seconds: float,
) -> FloodResult:
    result = FloodResult()
    flood_state = _held(db, flooder)
    probe_state = _held(db, probe)
    loud = client("bench-flood", flooder, password)
    quiet = client("bench-probe", probe, password)
    watch = client("bench-flood-observer", *observer_login)
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.setdefault(json.loads(msg.payload)["reported_at"], time.monotonic())

    watch.on_message = on_message
    for c in (loud, quiet, watch):
        connect(c, host, port)
    watch.subscribe(f"{ROOT}/devices/{probe}/state", qos=0)
    stop = threading.Event()

    def run_flood() -> None:
        topic = f"{ROOT}/devices/{flooder}/state"
        per_burst = max(1, rate // BURSTS_PER_S)
        start = time.monotonic()
        bursts = 0
        while not stop.is_set():
            now = datetime.now(UTC)
            for _ in range(per_burst):
                loud.publish(topic, _report(flood_state, now), qos=0)
            result.sent += per_burst
            bursts += 1
            pause = start + bursts / BURSTS_PER_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        result.seconds = time.monotonic() - start

    flooding = threading.Thread(target=run_flood, name="bench-flood", daemon=True)
    flooding.start()
    try:
        time.sleep(PROBE_EVERY_S)  # the flood is under way
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            now = datetime.now(UTC)
            at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as sent: ms
            key = _iso(at)
            sent = time.monotonic()
            quiet.publish(f"{ROOT}/devices/{probe}/state", _report(probe_state, at), qos=1)
            deadline = sent + PROBE_TIMEOUT_S
            while True:
                stored = _stored_at(db, probe)
                if stored is not None and stored >= at:
                    result.stored_s.append(time.monotonic() - sent)
                    break
                if time.monotonic() > deadline:
                    result.lost += 1
                    break
                time.sleep(0.005)
            with lock:
                if key in seen:
                    result.seen_s.append(seen[key] - sent)
            time.sleep(max(0.0, sent + PROBE_EVERY_S - time.monotonic()))
    finally:
        stop.set()
        flooding.join(timeout=10)
        for c in (loud, quiet, watch):
            c.loop_stop()
            c.disconnect()
    return result
