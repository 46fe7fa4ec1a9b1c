"""`python -m bench.wled_fleet`: many WLED controllers on one MQTT connection.

For the `live-fanout` scenario: a device answers a JSON command on `wled/<id>/api` as
WLED's firmware does (`wled00/json.cpp`, `wled00/mqtt.cpp`), at once (no throttle), by
publishing its brightness on `wled/<id>/g` and its colour on `wled/<id>/c` (QoS 0, as
WLED does). Every id under `wled/` answers, so the floor's ids (`floor-...`) are served
by the same code as the registered devices. At start it announces `--count` devices
online (`wled/<prefix>NNN/status`, retained) and prints `ready` once the broker has
them and its subscription.

One connection carries them all, on a privileged account: the broker's fan-out to many
connections is not what this measures, and the floor goes through the same connection.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from bench.mqtt import client, serve_until_signalled
from devices.simulator import FleetSpec

ROOT = "wled"


def answer(payload: bytes) -> tuple[bytes, bytes] | None:
    """The `/g` and `/c` bodies a WLED publishes after this JSON command (None: not one)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    on = bool(body.get("on", True))
    bri = int(body.get("bri", 255)) if on else 0
    colour = (0, 0, 0)
    seg = body.get("seg")
    if isinstance(seg, dict):
        col = seg.get("col")
        if isinstance(col, list) and col and isinstance(col[0], list) and len(col[0]) >= 3:
            colour = (int(col[0][0]), int(col[0][1]), int(col[0][2]))
    r, g, b = colour
    return str(bri).encode(), f"#{r << 16 | g << 8 | b:06X}".encode()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wled_fleet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--name", default="bench-wled-fleet", help="the MQTT client id")
    args = parser.parse_args()

    ids = [d.id for d in FleetSpec.generate(args.count, "unused", args.prefix).devices]
    ready = threading.Event()
    pending: set[int] = set()
    lock = threading.Lock()
    c = client(args.name, args.username, args.password)
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(1000)

    def done(mid: int) -> None:
        with lock:
            pending.discard(mid)
            if not pending:
                ready.set()

    def on_connect(cl: mqtt.Client, *_a: Any) -> None:
        _, mid = cl.subscribe(f"{ROOT}/+/api", 0)
        with lock:
            if mid is not None:
                pending.add(mid)
        for device in ids:
            info = cl.publish(f"{ROOT}/{device}/status", b"online", qos=1, retain=True)
            with lock:
                pending.add(info.mid)

    def on_message(cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got = answer(bytes(msg.payload))
        if got is None:
            return
        base = msg.topic.rsplit("/", 1)[0]
        cl.publish(f"{base}/g", got[0], qos=0)
        cl.publish(f"{base}/c", got[1], qos=0)

    c.on_connect = on_connect
    c.on_subscribe = lambda _cl, _u, mid, *_a: done(mid)
    c.on_publish = lambda _cl, _u, mid, *_a: done(mid)
    c.on_message = on_message
    return serve_until_signalled(
        c,
        args.host,
        args.port,
        ready,
        120,
        "the broker did not take the subscription and the statuses",
    )


if __name__ == "__main__":
    sys.exit(main())
