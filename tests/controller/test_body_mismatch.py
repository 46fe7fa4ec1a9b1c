"""An ack on device A's topic whose body names device B is refused: neither A's nor B's
plan moves, and the refusal is counted where operators read it, on GET /metrics."""

from __future__ import annotations

import re
from pathlib import Path

from controller.lifecycle import CommandState as S
from controller.store.users import Users
from controller.web.app import build_web
from tests.controller.test_intake import BLUE, STEP, World, iso
from tests.controller.test_staff_api import FakeClock, public_view, serve
from tests.support.stores import sql_database

MISMATCH = re.compile(
    r'^illuminate_device_messages_rejected_total\{reason="device_mismatch"\} (\S+)$', re.M
)


def test_an_ack_naming_another_device_is_refused_and_counted_in_metrics(tmp_path: Path) -> None:
    w = World()
    applied_as_b = w.ack(
        "d0",
        "applied",
        device="d1",
        step_at=iso(STEP),
        applied_at=iso(STEP),
        state=BLUE.model_dump(mode="json"),
    )
    outcome = w.intake.process([w.ack("d0", "armed", device="d1"), applied_as_b])
    assert outcome.moves == 0
    assert w.state_of("d0") is S.PENDING
    assert w.state_of("d1") is S.PENDING
    # the same ack without the wrong name is taken: the refusal was the name alone
    w.intake.process([w.ack("d0", "armed", device="d0")])
    assert w.state_of("d0") is S.ARMED

    with sql_database("sqlite", tmp_path) as (_, sessions, stores):
        clock = FakeClock()
        app = build_web(
            stores,
            clock,
            w.metrics,
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=Users(sessions),
        )
        with serve(app) as http:
            text = http.get("/metrics").text
    (count,) = MISMATCH.findall(text)
    assert float(count) == 2
