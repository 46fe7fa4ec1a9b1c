"""`python -m bench.echo`: the echo client of the floor, one per simulator shard.

Subscribes (QoS 1) to the plan topic of each of its ids and answers every non-empty
message on that id's ack topic (QoS 1) with the message's run tag (the bytes before
the first ';'). Prints `ready` once the broker acknowledged every subscription.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from bench.mqtt import ROOT, client, device_of, floor_ids, serve_until_signalled

CHUNK = 100


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()

    ids = floor_ids(args.shard, args.count)
    chunks = [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
    pending: set[int] = set()
    ready = threading.Event()
    c = client(f"bench-echo-{args.shard:02d}", args.username, args.password)

    def on_connect(cl: mqtt.Client, *_a: Any) -> None:
        for chunk in chunks:
            _, mid = cl.subscribe([(f"{ROOT}/devices/{d}/plan", 1) for d in chunk])
            if mid is not None:
                pending.add(mid)

    def on_subscribe(_cl: mqtt.Client, _u: Any, mid: int, *_a: Any) -> None:
        pending.discard(mid)
        if not pending:
            ready.set()

    def on_message(cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        tag = bytes(msg.payload).split(b";", 1)[0]
        cl.publish(f"{ROOT}/devices/{device_of(msg.topic)}/ack", tag, qos=1)

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    return serve_until_signalled(
        c, args.host, args.port, ready, 30, "subscriptions not acknowledged"
    )


if __name__ == "__main__":
    sys.exit(main())
