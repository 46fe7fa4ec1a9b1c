"""Publishing a live command through a third-party device's adapter.

A live command (`controller/live.py`) is stored and tracked as a one-step plan; what goes
on the wire is its adapter's `command(target)`: one or more vendor messages, never
retained, each at the QoS its adapter gives. The command counts as handed to the broker
(PUBLISHED) only when the broker acknowledged every one of them. The dispatcher
(`controller/dispatch.py`) calls `publish_live` where it would publish a plan, so a live
command has the plan's lifecycle: committed first, published again after a timeout or a
reconnect, never published after its `not_after` (EXPIRED instead).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from controller.broker.base import Broker, Done
from controller.store.base import Command
from devices.adapters import Adapter
from devices.adapters import Command as VendorMessage
from devices.protocol import Plan

log = logging.getLogger(__name__)


def live_messages(
    adapter: Adapter, command: Command, now: datetime, plan: Plan | None = None
) -> tuple[VendorMessage, ...]:
    """The vendor messages of a live command: its step in force at `now` (the only one,
    for a command the reconciler made), as the adapter encodes it. `plan`: the command's
    plan when already decoded."""
    plan = plan if plan is not None else command.plan
    step = plan.step_at(now) or plan.steps[0]
    return adapter.command(step.state, ref=command.version)


class _Gather:
    """One `done` for several publishes: True once all are acknowledged, False at the
    first refusal; called at most once."""

    def __init__(self, count: int, done: Done | None) -> None:
        self.left = count
        self.done = done
        self.lock = threading.Lock()

    def one(self, ok: bool) -> None:
        with self.lock:
            if self.done is None:
                return
            self.left -= 1
            if ok and self.left > 0:
                return
            done, self.done = self.done, None
        done(ok)

    def cancel(self) -> None:
        with self.lock:
            self.done = None


def publish_live(
    broker: Broker,
    adapter: Adapter,
    command: Command,
    now: datetime,
    done: Done | None,
    plan: Plan | None = None,
) -> bool:
    """Hand a live command's vendor messages to the broker; False when they could not
    all be queued (the caller publishes the command again later: the messages set a
    state, so a repeat does no harm)."""
    messages = live_messages(adapter, command, now, plan)
    gather = _Gather(len(messages), done)
    for message in messages:
        if message.retain:  # the adapter's Command refuses it too: never a retained command
            raise ValueError("a live command is never retained")
        if not broker.publish(
            message.topic, message.payload, retain=False, qos=message.qos, done=gather.one
        ):
            gather.cancel()
            return False
    return bool(messages)


def request_state(broker: Broker, adapter: Adapter, ref: int = 0) -> bool:
    """Ask the device to report its state again, where its adapter knows how (a
    Zigbee2MQTT `/get` reads the light back). False when it has no way, or the
    broker is not connected."""
    request = adapter.state_request(ref=ref)
    if request is None:
        return False
    sent = True
    for message in request.commands:
        sent = (
            broker.publish(message.topic, message.payload, retain=False, qos=message.qos) and sent
        )
    return sent
