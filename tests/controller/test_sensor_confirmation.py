"""Confirmation strength and the light-sensor rule: the pure comparison, the intake's
decisions on in-memory stores, and the public state that follows (no broker, no sleeps)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from controller.broker.base import Incoming
from controller.confirmation import (
    SENSOR_TOLERANCE,
    ConfirmedBy,
    compare_reading,
    confirmed_by,
    record_applied,
    weakest,
)
from controller.lifecycle import CommandState as S
from controller.public import PublicState
from controller.store.base import NewDevice
from controller.store.history import DeviceEvent, EventKind, MemoryHistory
from controller.store.history_sql import sql_history
from controller.store.memory import memory_stores
from devices.adapters.base import Strength
from devices.protocol import LightState, Reading
from devices.sensor import SimulatedSensor
from tests.controller import test_public as pub
from tests.controller.test_intake import BLUE, CATALOG, STEP, T0, TOPICS, World, iso
from tests.support.stores import SQL_KINDS, sql_database

# ---- the comparison ---------------------------------------------------------------------

TARGET = LightState(on=True, color="#009EDB", level=80)  # effective level 68.7
OFF = LightState(on=False)


def seen(color: str, level: float) -> Reading:
    return Reading(color=color, level=level, sensor="tcs34725")


@pytest.mark.parametrize(
    ("why", "target", "reading", "confirms", "says"),
    [
        ("exactly the target", TARGET, seen("#00B8FF", 68.7), True, None),
        ("a real sensor's blue, crosstalk and all", TARGET, seen("#2A9AFF", 60), True, None),
        ("the level within 15 points", TARGET, seen("#00B8FF", 54), True, None),
        ("red for blue", TARGET, seen("#FF0000", 68.7), False, "another colour"),
        ("green for blue", TARGET, seen("#00FF40", 68.7), False, "another colour"),
        ("violet for blue (hue 30 away)", TARGET, seen("#5500FF", 68.7), False, "another colour"),
        ("white for blue", TARGET, seen("#FFFFFF", 68.7), False, "another colour"),
        ("too dim", TARGET, seen("#00B8FF", 40), False, "another level"),
        ("no light at all", TARGET, seen("#000000", 0), False, "no light"),
        ("a colour but nearly dark", TARGET, seen("#00B8FF", 3), False, "no light"),
        ("off, and dark", OFF, seen("#000000", 0), True, None),
        ("off, and street light", OFF, seen("#FFC070", 8), True, None),
        ("off, but lit", OFF, seen("#00B8FF", 68.7), False, "the step is off"),
        ("a glow too dim for a colour", LightState(on=True, color="#009EDB", level=4),
         seen("#000000", 0), True, None),
        ("a glow, but the sensor saw full light", LightState(on=True, color="#009EDB", level=4),
         seen("#00B8FF", 68.7), False, "another level"),
        ("white for white", LightState(on=True, color="#FFFFFF", level=100),
         seen("#F4F8FF", 95), True, None),
    ],
)  # fmt: skip
def test_a_reading_confirms_the_target_only_within_the_tolerance(
    why: str, target: LightState, reading: Reading, confirms: bool, says: str | None
) -> None:
    reason = compare_reading(target, reading)
    assert (reason is None) is confirms, why
    if says is not None:
        assert reason is not None and says in reason, (why, reason)
        # the reason carries the figures staff need
        assert reading.color in reason and "tcs34725" in reason


def test_the_simulated_sensor_confirms_what_it_sees_and_not_a_wrong_colour() -> None:
    for target in (TARGET, OFF, LightState(on=True, color="#C8102E", level=40)):
        assert compare_reading(target, SimulatedSensor().read(target)) is None
    assert compare_reading(TARGET, SimulatedSensor(wrong_colour="#FF0000").read(TARGET))


def test_the_tolerance_is_wider_than_an_echo_but_keeps_campaign_colours_apart() -> None:
    assert SENSOR_TOLERANCE.hue < 60  # blue and cyan are 60 degrees apart
    blue = LightState(on=True, color="#0000FF", level=100)
    assert compare_reading(blue, seen("#00FFFF", 100)) is not None  # cyan is not blue
    assert compare_reading(blue, seen("#8000FF", 100)) is not None  # nor is violet


def test_measured_is_sensor_in_one_place() -> None:
    assert confirmed_by(Strength.MEASURED) is ConfirmedBy.SENSOR
    assert confirmed_by(Strength.ECHO) is ConfirmedBy.ECHO
    assert confirmed_by(Strength.READBACK) is ConfirmedBy.READBACK
    assert confirmed_by("measured") is ConfirmedBy.SENSOR
    assert confirmed_by("sensor") is ConfirmedBy.SENSOR
    assert confirmed_by(None) is ConfirmedBy.ECHO  # a row from before strengths were kept
    assert confirmed_by("rumour") is ConfirmedBy.ECHO  # never claims more than an echo


def test_a_site_is_as_sure_as_its_weakest_device() -> None:
    assert weakest([ConfirmedBy.SENSOR, ConfirmedBy.ECHO]) is ConfirmedBy.ECHO
    assert weakest([ConfirmedBy.SENSOR, ConfirmedBy.READBACK]) is ConfirmedBy.READBACK
    assert weakest([ConfirmedBy.SENSOR]) is ConfirmedBy.SENSOR
    assert weakest([]) is None


# ---- the intake ---------------------------------------------------------------------------


def applied(w: World, device: str, reading: Reading | None, state: LightState = BLUE) -> Incoming:
    body: dict[str, object] = {
        "v": 1,
        "version": 1,
        "stage": "applied",
        "step_at": iso(STEP),
        "applied_at": iso(STEP),
        "state": state.model_dump(mode="json"),
    }
    if reading is not None:
        body["reading"] = reading.model_dump(mode="json", exclude_none=True)
    return Incoming(TOPICS.ack(device), json.dumps(body).encode(), False)


@pytest.fixture
def w() -> World:
    world = World()
    world.intake.history = MemoryHistory()
    return world


def test_an_ack_without_a_reading_confirms_as_echo(w: World) -> None:
    w.intake.process([applied(w, "d0", None)])
    assert w.state_of("d0") is S.APPLIED
    assert w.view("d0").confirmed_by == "echo"
    assert w.intake.history is not None
    (event,) = w.intake.history.events(["d0"], kinds=[EventKind.STEP])
    assert (event.kind, event.confirmed_by, event.reading) == (EventKind.STEP, "echo", None)


def test_a_matching_reading_confirms_as_sensor(w: World) -> None:
    reading = SimulatedSensor().read(BLUE)
    w.intake.process([applied(w, "d0", reading)])
    assert w.state_of("d0") is S.APPLIED
    view = w.view("d0")
    assert (view.confirmed_by, view.applied_step_at) == ("sensor", STEP)
    assert w.intake.history is not None
    (event,) = w.intake.history.events(["d0"], kinds=[EventKind.STEP])
    assert event.confirmed_by == "sensor" and event.reading == reading.model_dump(
        mode="json", exclude_none=True
    )


def test_a_wrong_colour_leaves_the_step_unconfirmed_with_the_reason(w: World) -> None:
    reading = SimulatedSensor(wrong_colour="#FF0000").read(BLUE)
    # the ack, then the state report the agent sends after it: the echo must not
    # confirm what the sensor refuted
    w.intake.process([applied(w, "d0", reading), w.report("d0", retain=False)])
    command = w.stores.outbox.latest()["d0"]
    assert command.state is S.UNCONFIRMED
    assert command.reason is not None and "#FF0000" in command.reason
    view = w.view("d0")
    assert view.applied_step_at != STEP  # not recorded as applied
    assert (view.mismatch_version, view.mismatch_step_at) == (1, STEP)
    assert view.mismatch is not None and view.mismatch["reading"]["color"] == "#FF0000"
    assert view.mismatch["target"]["color"] == "#009EDB"
    assert w.intake.history is not None
    (event,) = w.intake.history.events(["d0"], kinds=[EventKind.MISMATCH])
    assert event.reason is not None and "another colour" in event.reason
    assert event.reading is not None and event.reading["color"] == "#FF0000"
    assert not w.intake.history.events(["d0"], kinds=[EventKind.STEP])
    # a repeated ack tells nothing new; a later state report confirms nothing either
    w.intake.process([applied(w, "d0", reading), w.report("d0", retain=True)])
    assert w.stores.outbox.latest()["d0"].state is S.UNCONFIRMED
    assert len(w.intake.history.events(["d0"], kinds=[EventKind.MISMATCH])) == 1


def test_a_matching_reading_later_clears_the_mismatch(w: World) -> None:
    w.intake.process([applied(w, "d0", SimulatedSensor(wrong_colour="#FF0000").read(BLUE))])
    w.intake.process([applied(w, "d0", SimulatedSensor().read(BLUE))])
    assert w.state_of("d0") is S.APPLIED
    view = w.view("d0")
    assert (view.confirmed_by, view.mismatch_version, view.mismatch) == ("sensor", None, None)


def test_a_measurement_after_the_echo_takes_the_stronger_word(w: World) -> None:
    w.intake.process([w.report("d0", retain=False)])  # the state report came first
    assert w.view("d0").confirmed_by == "echo"
    first = w.view("d0").applied_at
    w.intake.process([applied(w, "d0", SimulatedSensor().read(BLUE))])
    view = w.view("d0")
    assert (view.confirmed_by, view.applied_at) == ("sensor", first)


def test_a_mismatch_after_the_echo_takes_the_confirmation_back(w: World) -> None:
    w.intake.process([w.report("d0", retain=False)])
    assert w.state_of("d0") is S.APPLIED
    w.intake.process([applied(w, "d0", SimulatedSensor(wrong_colour="#00FF00").read(BLUE))])
    assert w.state_of("d0") is S.UNCONFIRMED


def test_record_applied_is_the_one_writer_of_a_step_and_its_strength() -> None:
    view = World().view("d0")
    held = record_applied(view, 1, STEP, BLUE.model_dump(mode="json"), STEP, Strength.READBACK)
    assert (held.applied_version, held.applied_step_at, held.confirmed_by) == (1, STEP, "readback")
    measured = record_applied(held, 1, STEP, BLUE.model_dump(mode="json"), STEP, Strength.MEASURED)
    assert measured.confirmed_by == "sensor"


# ---- the public state ---------------------------------------------------------------------

NOW = pub.S + timedelta(seconds=10)  # within the grace


def test_a_lit_site_says_how_it_was_confirmed() -> None:
    measured = replace(pub.lit_device(), confirmed_by="sensor")
    (site, *_) = pub.status(pub.snap(measured), NOW).sites
    assert (site.state, site.confirmed_by) == (PublicState.LIT, ConfirmedBy.SENSOR)
    (site, *_) = pub.status(pub.snap(pub.lit_device()), NOW).sites
    assert site.confirmed_by is ConfirmedBy.ECHO  # stored before strengths were kept


def test_a_site_with_two_devices_shows_the_weaker_confirmation() -> None:
    a = replace(pub.lit_device("dev-a"), confirmed_by="sensor")
    b = replace(pub.lit_device("dev-b"), confirmed_by="readback")
    (site, *_) = pub.status(pub.snap(a, b), NOW).sites
    assert (site.state, site.confirmed_by) == (PublicState.LIT, ConfirmedBy.READBACK)


def test_a_refuted_step_is_unconfirmed_at_once_not_pending() -> None:
    waiting = pub.device()  # online, nothing applied yet
    (site, *_) = pub.status(pub.snap(waiting), NOW).sites
    assert site.state is PublicState.PENDING
    refuted = replace(waiting, mismatch_version=1, mismatch_step_at=pub.S, mismatch={})
    (site, *_) = pub.status(pub.snap(refuted), NOW).sites
    assert (site.state, site.confirmed_by, site.color) == (PublicState.UNCONFIRMED, None, None)
    # a refutation of an older version says nothing of the newest
    older = replace(refuted, mismatch_version=0)
    (site, *_) = pub.status(pub.snap(older), NOW).sites
    assert site.state is PublicState.PENDING


def test_a_refuted_step_is_not_lit_even_if_an_echo_recorded_it() -> None:
    both = replace(pub.lit_device(), mismatch_version=1, mismatch_step_at=pub.S, mismatch={})
    (site, *_) = pub.status(pub.snap(both), NOW).sites
    assert site.state is PublicState.UNCONFIRMED


def test_confirmed_by_is_in_the_document_only_for_lit_sites() -> None:
    measured = replace(pub.lit_device(), confirmed_by="sensor")
    other = pub.device("dev-palace", "palace")
    campaign = pub.campaign(targets={"sites": ["atomium", "palace"]})
    body = pub.status(pub.snap(measured, other, campaigns=(campaign,)), NOW).model_dump(
        mode="json", exclude_none=True
    )
    sites = {s["id"]: s for s in body["sites"]}
    assert sites["atomium"]["confirmed_by"] == "sensor"
    assert sites["palace"]["state"] == "pending" and "confirmed_by" not in sites["palace"]
    assert T0 < STEP  # (the intake world's step is after its start)


# ---- stored: the device view and the record, on every store -------------------------------


@pytest.mark.parametrize("kind", ["memory", *SQL_KINDS])
def test_strength_and_mismatch_are_stored_and_kept_once_per_step(kind: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        if kind == "memory":
            stores, history = memory_stores(), MemoryHistory()
        else:
            _, sessions, stores = stack.enter_context(sql_database(kind, tmp_path))
            history = sql_history(sessions)
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices([NewDevice("d0", "s0")], T0)
        reading = SimulatedSensor(wrong_colour="#FF0000").read(BLUE).model_dump(mode="json")
        view = replace(
            stores.reports.views()["d0"],
            confirmed_by="sensor",
            mismatch_version=2,
            mismatch_step_at=STEP,
            mismatch={"reason": "red for blue", "reading": reading},
        )
        assert stores.reports.save([view]) == 1
        assert stores.reports.views()["d0"] == view
        mismatch = DeviceEvent(
            "d0",
            EventKind.MISMATCH,
            STEP,
            version=2,
            step_at=STEP,
            applied_at=STEP,
            state=BLUE.model_dump(mode="json"),
            source="ack",
            reading=reading,
            reason="red for blue",
        )
        measured = DeviceEvent(
            "d0", EventKind.STEP, STEP, version=2, step_at=STEP, confirmed_by="sensor"
        )
        assert history.add_events([mismatch, measured, mismatch]) == 2
        assert history.add_events([replace(mismatch, reason="again")]) == 0
        assert history.events(["d0"]) == [mismatch, measured]
        assert history.step_events(["d0"], T0) == [measured]  # a mismatch is not a step
