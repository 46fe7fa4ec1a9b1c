"""The bounded, fair hand-off from the broker's thread to the intake.

- Per device: acks queue in order, at most `per_device` of them; a state report and a
  status replace the device's previous one still waiting (the newest wins: they say
  what is true now, and an older one is worth nothing once a newer one is here).
- Between devices: `take` serves devices in the order they became ready, all of one
  device's waiting messages at a time, so one device's flood costs the others at most
  one turn, never a wait behind its backlog.
- Bounded: at most `max_devices` devices waiting. Every message not kept is counted by
  reason through `on_drop`; none is lost silently.
- `put` never blocks (it runs on the broker's network thread).
- Barriers (controller/barrier.py) come in on the controller's own topic, in order with
  the devices' messages. `passed`, set by each `take`: the time of the newest barrier
  every message put before which has now been taken, so whoever stores what it took
  then holds every message that reached the broker before that time (None: no barrier
  passed by this take).
- `backlog`: what was received and is not stored yet: the messages waiting here plus
  the last `take`'s until its taker calls `settle` (it stored them), with the arrival
  time (on `monotonic`) of the oldest of them, for /readyz and /metrics.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from controller.barrier import decode_barrier
from controller.broker.base import Incoming
from devices.protocol import Kind, Topics

PER_DEVICE = 64
MAX_DEVICES = 200_000

Drop = Callable[[str], None]


@dataclass(frozen=True)
class Backlog:
    """Messages received and not stored yet, and when (monotonic) the oldest came."""

    count: int
    oldest_at: float | None

    def age_s(self, now: float) -> float:
        """How long the oldest has waited (0 with nothing waiting)."""
        return 0.0 if self.oldest_at is None else max(0.0, now - self.oldest_at)


class _Slot:
    __slots__ = ("items",)

    def __init__(self) -> None:
        # kind, message, arrival (monotonic), sequence number of the put it stands for;
        # arrivals rise along the deque (a replacement keeps the number of the message
        # it replaced: what came before a barrier is not all taken until it is)
        self.items: deque[tuple[Kind, Incoming, float, int]] = deque()


class Inbox:
    def __init__(
        self,
        topics: Topics,
        *,
        per_device: int = PER_DEVICE,
        max_devices: int = MAX_DEVICES,
        on_drop: Drop = lambda _reason: None,
        on_barrier: Callable[[datetime], None] = lambda _at: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = topics
        self.monotonic = monotonic
        self.on_barrier = on_barrier
        """Told of each barrier as it comes, for the other queues it must pass (the
        third-party devices' intake)."""
        self.passed: datetime | None = None
        """Set by each `take`: the newest barrier it passed, else None."""
        self.barrier_topic = topics.controller_barrier
        self._seq = 0
        self._barriers: deque[tuple[int, datetime]] = deque()  # put number, barrier time
        self.per_device = per_device
        self.max_devices = max_devices
        self.on_drop = on_drop
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._count = 0
        self._taken: Backlog = Backlog(0, None)  # the last take's, until `settle`
        self._ready = threading.Condition()

    def __len__(self) -> int:
        with self._ready:
            return self._count

    def backlog(self) -> Backlog:
        """Waiting here, plus taken and not settled. Looks at every waiting device's
        first message (under the lock): call it per scrape or probe, not per message."""
        with self._ready:
            oldest = self._taken.oldest_at
            for slot in self._slots.values():
                first = slot.items[0][2]
                if oldest is None or first < oldest:
                    oldest = first
            return Backlog(self._count + self._taken.count, oldest)

    def settle(self) -> None:
        """What the last `take` returned is stored: it is no longer backlog."""
        with self._ready:
            self._taken = Backlog(0, None)

    def put(self, message: Incoming) -> None:
        if message.topic == self.barrier_topic:
            self._put_barrier(message)
            return
        where = self.topics.parse(message.topic)
        if where is None or where.kind is Kind.PLAN:
            self.on_drop("not_a_device_topic")
            return
        dropped: str | None = None
        arrived = self.monotonic()
        with self._ready:
            slot = self._slots.get(where.device_id)
            if slot is None:
                if len(self._slots) >= self.max_devices:
                    dropped = "inbox_full"
                else:
                    slot = self._slots[where.device_id] = _Slot()
            if slot is not None:
                dropped = self._add(slot, where.kind, message, arrived)
            self._ready.notify()
        if dropped is not None:
            self.on_drop(dropped)

    def _put_barrier(self, message: Incoming) -> None:
        at = decode_barrier(message.payload)
        if at is None or message.retain:
            self.on_drop("malformed_barrier")
            return
        with self._ready:
            self._barriers.append((self._seq, at))
            self._ready.notify()
        self.on_barrier(at)

    def _add(self, slot: _Slot, kind: Kind, message: Incoming, arrived: float) -> str | None:
        items = slot.items
        self._seq += 1
        if kind is Kind.ACK:
            acks = sum(1 for k, _, _, _ in items if k is Kind.ACK)
            if acks >= self.per_device:
                return "device_queue_full"
            items.append((kind, message, arrived, self._seq))
            self._count += 1
            return None
        for i, (k, _, _, seq) in enumerate(items):
            if k is kind:
                del items[i]
                items.append((kind, message, arrived, seq))
                return "coalesced"
        items.append((kind, message, arrived, self._seq))
        self._count += 1
        return None

    def _pass_barriers(self) -> datetime | None:
        """Drop the barriers every message put before which is taken; the newest's time."""
        if not self._barriers:
            return None
        waiting = min(
            (seq for slot in self._slots.values() for _, _, _, seq in slot.items),
            default=self._seq + 1,
        )
        passed: datetime | None = None
        while self._barriers and self._barriers[0][0] < waiting:
            passed = self._barriers.popleft()[1]
        return passed

    def take(self, max_items: int, timeout: float) -> list[Incoming]:
        """Up to `max_items` messages, fairly across devices; waits up to `timeout`
        seconds for the first one, never for more. They count as backlog until `settle`
        (or the next `take`: a taker takes again only once it is done with the last)."""
        with self._ready:
            self._taken = Backlog(0, None)
            if not self._slots and not self._barriers:
                self._ready.wait(timeout)
            out: list[Incoming] = []
            oldest: float | None = None
            while self._slots and len(out) < max_items:
                device_id, slot = self._slots.popitem(last=False)
                room = max_items - len(out)
                first = slot.items[0][2]
                if oldest is None or first < oldest:
                    oldest = first
                while slot.items and room > 0:
                    out.append(slot.items.popleft()[1])
                    room -= 1
                if slot.items:
                    self._slots[device_id] = slot  # the rest waits for its next turn
            self._count -= len(out)
            self._taken = Backlog(len(out), oldest)
            self.passed = self._pass_barriers()
            return out

    def wake(self) -> None:
        """Release a waiting `take` (used when stopping)."""
        with self._ready:
            self._ready.notify_all()
