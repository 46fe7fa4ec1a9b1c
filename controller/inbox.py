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
- `last_drained`: when a `take` left nothing behind, the time it did (by the clock given),
  so whoever stores what it took knows it then holds everything received before that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime

from controller.broker.base import Incoming
from devices.protocol import Kind, Topics

PER_DEVICE = 64
MAX_DEVICES = 200_000

Drop = Callable[[str], None]


class _Slot:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: deque[tuple[Kind, Incoming]] = deque()


class Inbox:
    def __init__(
        self,
        topics: Topics,
        *,
        per_device: int = PER_DEVICE,
        max_devices: int = MAX_DEVICES,
        on_drop: Drop = lambda _reason: None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.topics = topics
        self.clock = clock
        self.last_drained: datetime | None = None
        """Set by each `take`: its time when it left the inbox empty, else None."""
        self.per_device = per_device
        self.max_devices = max_devices
        self.on_drop = on_drop
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._count = 0
        self._ready = threading.Condition()

    def __len__(self) -> int:
        with self._ready:
            return self._count

    def put(self, message: Incoming) -> None:
        where = self.topics.parse(message.topic)
        if where is None or where.kind is Kind.PLAN:
            self.on_drop("not_a_device_topic")
            return
        dropped: str | None = None
        with self._ready:
            slot = self._slots.get(where.device_id)
            if slot is None:
                if len(self._slots) >= self.max_devices:
                    dropped = "inbox_full"
                else:
                    slot = self._slots[where.device_id] = _Slot()
            if slot is not None:
                dropped = self._add(slot, where.kind, message)
            self._ready.notify()
        if dropped is not None:
            self.on_drop(dropped)

    def _add(self, slot: _Slot, kind: Kind, message: Incoming) -> str | None:
        items = slot.items
        if kind is Kind.ACK:
            acks = sum(1 for k, _ in items if k is Kind.ACK)
            if acks >= self.per_device:
                return "device_queue_full"
            items.append((kind, message))
            self._count += 1
            return None
        for i, (k, _) in enumerate(items):
            if k is kind:
                del items[i]
                items.append((kind, message))
                return "coalesced"
        items.append((kind, message))
        self._count += 1
        return None

    def take(self, max_items: int, timeout: float) -> list[Incoming]:
        """Up to `max_items` messages, fairly across devices; waits up to `timeout`
        seconds for the first one, never for more."""
        with self._ready:
            if not self._slots:
                self._ready.wait(timeout)
            out: list[Incoming] = []
            while self._slots and len(out) < max_items:
                device_id, slot = self._slots.popitem(last=False)
                room = max_items - len(out)
                while slot.items and room > 0:
                    out.append(slot.items.popleft()[1])
                    room -= 1
                if slot.items:
                    self._slots[device_id] = slot  # the rest waits for its next turn
            self._count -= len(out)
            self.last_drained = self.clock() if self.clock is not None and not self._slots else None
            return out

    def wake(self) -> None:
        """Release a waiting `take` (used when stopping)."""
        with self._ready:
            self._ready.notify_all()
