"""Catch-up barriers: how the intake knows it holds every message the broker had for it.

Some decisions rest on a report *not* having come: a step is UNCONFIRMED only when no
apply report came within the grace, and a window is `missed` only when no device said it
ran. An empty inbox proves nothing about that: on a busy night the reports can still sit
in the socket, in the client library's buffers, or in the broker's queue for the
controller, while the controller is busy sending plans.

So the controller sends itself a barrier, once a second: a QoS 1 message, never
retained, on `{root}/controller/barrier`, which it subscribes to and devices may neither
read nor write. It carries the controller's time when it was sent (T). The broker hands
one client its QoS 1 messages in the order it received them, so every message that
reached the broker before T comes to the controller before that barrier. Once the
intake has stored everything that came before the barrier, it holds every message that
reached the broker before T: `Intake.caught_up_to()` is then T.

While the broker is away no barrier comes back and `caught_up_to` stands still; the
decisions that wait on it wait for at most one more grace (controller/reconcile.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from devices.protocol import Instant, decode, encode

BARRIER_EVERY_S = 1.0
"""Seconds between barriers (on the monotonic clock)."""


class Barrier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1] = 1
    at: Instant


def encode_barrier(at: datetime) -> bytes:
    return encode(Barrier(at=at))


def decode_barrier(payload: bytes) -> datetime | None:
    """The barrier's time, or None when the payload is not a barrier."""
    try:
        return decode(Barrier, payload).at
    except ValueError:
        return None
