"""The intake tells the health tracker of every message it decides, and a fault there
never stops the decision."""

from __future__ import annotations

from controller.device_health import HealthTracker
from controller.lifecycle import CommandState as S
from tests.controller.test_intake import World


def test_the_tracker_sees_live_messages_with_the_intakes_time() -> None:
    w = World()
    tracker = HealthTracker()
    w.intake.on_message = tracker.observe
    w.intake.process([w.status("d0", True), w.report("d1", retain=False), w.applied("d2")])
    born = tracker.get("d0")
    assert born is not None and born.last_seen is None  # a retained status: not "now"
    seen = tracker.get("d1")
    assert seen is not None and seen.last_seen == w.clock()
    assert seen.clock_source == "state"
    assert seen.clock_offset_ms == 60_000  # reported at STEP, taken in a minute later: 60 s behind
    applied = tracker.get("d2")
    assert applied is not None
    assert (applied.clock_source, applied.clock_offset_ms) == ("ack", 60_000)


def test_a_failing_observer_does_not_stop_the_intake() -> None:
    w = World()

    def broken(*_args: object) -> None:
        raise RuntimeError("observer down")

    w.intake.on_message = broken
    w.intake.process([w.ack("d0", "received"), w.applied("d1")])
    assert w.state_of("d0") is S.RECEIVED
    assert w.state_of("d1") is S.APPLIED


def test_a_test_flash_is_no_event_of_the_record() -> None:
    """The record is of what campaigns lit: a test flash, even one in the window's own
    look from its very start, is not a step of it."""
    from controller.broker.base import Incoming
    from controller.flash import flash_plan
    from controller.store.base import NewVersion
    from devices.protocol import encode
    from tests.controller.test_record_intake import BLUE, START
    from tests.controller.test_record_intake import World as RecordWorld

    w = RecordWorld()
    real = w.stores.outbox.latest()["d0"]
    test = flash_plan(2, START, 10, BLUE, real.plan)
    w.stores.outbox.add_versions(
        [NewVersion("d0", 2, encode(test).decode(), START, (real.id, real.state))]
    )
    ack = w.applied(START, BLUE, START)
    applied = Incoming(ack.topic, ack.payload.replace(b'"version": 1', b'"version": 2'), False)
    w.intake.process([applied])
    assert w.stores.outbox.latest()["d0"].state is S.APPLIED  # the test itself is answered
    assert w.steps() == []
