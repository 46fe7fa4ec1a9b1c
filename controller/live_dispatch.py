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
from collections.abc import Callable, Mapping
from datetime import datetime

from controller.broker.base import Broker, Done
from controller.lifecycle import CommandState
from controller.store.base import Command, OutboxStore
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


AWAITING_REPORT = frozenset({CommandState.PUBLISHED, CommandState.RECEIVED})
"""A live command the broker has and no report of the device has confirmed yet."""


class AskAgainOnReconnect:
    """A broker listener: on every reconnection, the third-party devices whose newest
    command awaits their report are asked to report again (where their adapter knows
    how). Vendor reports come at QoS 0 and most are not retained: one a device sent
    while the controller's link was away is lost, and without asking, its command would
    wait for the grace to run out and a retry. A process's first connection asks only
    when it resumed the session (a restart; a new session sends the commands again).
    The asking runs on a thread of its own (`run`), never on the broker's."""

    def __init__(
        self,
        outbox: OutboxStore,
        adapters: Callable[[], Mapping[str, Adapter]],
        broker: Broker,
        run: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.adapters = adapters
        self.broker = broker
        self.run = run if run is not None else _on_a_thread
        self.connections = 0

    def connected(self) -> None:
        self.connections += 1
        # a process's first connection asks too when it resumed the session: the
        # controller restarted, and what was said while it was down is lost as well
        if self.connections > 1 or self.broker.session_resumed:
            self.run(self.ask)

    def disconnected(self) -> None:
        pass

    def ask(self) -> int:
        """Ask every awaiting device now; how many were asked."""
        adapters = self.adapters()
        if not adapters:
            return 0
        try:
            latest = self.outbox.latest(list(adapters))
        except Exception:  # the database is away: the grace and its retry still hold
            log.exception("could not read the live commands to ask their devices again")
            return 0
        asked = 0
        for device_id, command in sorted(latest.items()):
            adapter = adapters.get(device_id)
            if adapter is None or command.state not in AWAITING_REPORT:
                continue
            if request_state(self.broker, adapter, command.version):
                asked += 1
        if asked:
            log.info("reconnected: %d third-party devices asked to report again", asked)
        return asked


def _on_a_thread(work: Callable[[], object]) -> None:
    threading.Thread(target=work, name="ask-again", daemon=True).start()
