"""The native protocol v1 codec: models, decode/encode, topics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from devices.protocol import (
    MAX_PAYLOAD_BYTES,
    MAX_STEPS,
    MAX_VERSION,
    OFF,
    Ack,
    ControllerStatus,
    DeviceState,
    DeviceStatus,
    DeviceTopic,
    Kind,
    LightState,
    Plan,
    PlanStep,
    ProtocolError,
    Stage,
    Topics,
    check_device_id,
    decode,
    encode,
    format_instant,
    is_device_id,
)

T0 = datetime(2030, 7, 30, 19, 45, tzinfo=UTC)
BLUE = LightState(on=True, color="#1e50ff", level=80, transition_s=2.5)


def body(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode(model))
    return data


def raw(data: object) -> bytes:
    return json.dumps(data).encode()


def kind_of(model: type[BaseModel], payload: bytes | str) -> str:
    with pytest.raises(ProtocolError) as exc:
        decode(model, payload)
    return exc.value.kind


PLAN = Plan(
    version=7,
    issued_at=T0,
    not_after=T0 + timedelta(hours=1),
    steps=[
        PlanStep(at=T0 + timedelta(minutes=15), state=BLUE),
        PlanStep(at=T0 + timedelta(hours=5, milliseconds=250), state=OFF),
    ],
    test=True,
)

EVERY_MESSAGE: list[BaseModel] = [
    PLAN,
    Plan(version=1, issued_at=T0, steps=[]),
    Ack(version=7, stage=Stage.RECEIVED, device="dev-a"),
    Ack(version=7, stage=Stage.ARMED, device="dev-a", clock_offset_ms=-12),
    Ack(
        version=7,
        stage=Stage.APPLIED,
        device="dev-a",
        step_at=T0,
        applied_at=T0 + timedelta(milliseconds=40),
        state=BLUE,
    ),
    Ack(version=7, stage=Stage.FAILED, step_at=T0, reason="DMX interface unplugged"),
    Ack(version=7, stage=Stage.REJECTED, reason="unsupported"),
    Ack(version=7, stage=Stage.EXPIRED),
    DeviceState(
        device="dev-a",
        state=BLUE,
        plan_version=7,
        step_at=T0,
        reported_at=T0,
        firmware="fw/1",
        clock_synced=True,
    ),
    DeviceState(state=OFF, reported_at=T0),
    DeviceStatus(online=True, device="dev-a", firmware="fw/1", since=T0),
    DeviceStatus(online=True, firmware="fw/1", since=T0, plan_version=7),
    DeviceStatus(online=False),
    ControllerStatus(online=True, since=T0),
    ControllerStatus(online=False),
]


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: BaseModel) -> None:
    payload = encode(message)
    assert decode(type(message), payload) == message
    assert decode(type(message), payload.decode()) == message  # str is fine too
    assert decode(type(message), bytearray(payload)) == message


@pytest.mark.parametrize("part", [BLUE, OFF, PLAN.steps[0]], ids=lambda m: type(m).__name__)
def test_nested_models_round_trip(part: BaseModel) -> None:
    assert type(part).model_validate_json(encode(part)) == part


def test_encode_is_compact_with_utc_z_and_no_unset_fields() -> None:
    assert encode(DeviceStatus(online=False)) == b'{"v":1,"online":false}'
    assert body(Ack(version=3, stage=Stage.ARMED)) == {"v": 1, "version": 3, "stage": "armed"}
    data = body(PLAN)
    assert data["issued_at"] == "2030-07-30T19:45:00Z"
    assert data["steps"][1]["at"] == "2030-07-31T00:45:00.250Z"
    assert data["steps"][0]["state"] == {
        "on": True,
        "color": "#1E50FF",
        "level": 80,
        "transition_s": 2.5,
    }


def test_format_instant() -> None:
    assert format_instant(T0) == "2030-07-30T19:45:00Z"
    assert format_instant(T0 + timedelta(microseconds=123456)) == "2030-07-30T19:45:00.123Z"
    cet = timezone(timedelta(hours=2))
    assert format_instant(datetime(2030, 7, 30, 21, 45, tzinfo=cet)) == "2030-07-30T19:45:00Z"
    with pytest.raises(ValueError):
        format_instant(datetime(2030, 7, 30, 19, 45))


def test_offsets_are_normalised_to_utc() -> None:
    plan = decode(
        Plan, raw({"v": 1, "version": 1, "issued_at": "2030-07-30T21:45:00+02:00", "steps": []})
    )
    assert plan.issued_at == T0 and plan.issued_at.tzinfo == UTC


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_extra_keys_are_refused(message: BaseModel) -> None:
    data = body(message)
    data["surprise"] = 1
    assert kind_of(type(message), raw(data)) == "invalid"


def test_extra_keys_are_refused_in_nested_objects() -> None:
    data = body(PLAN)
    data["steps"][0]["state"]["strobe"] = True
    with pytest.raises(ProtocolError, match="strobe"):
        decode(Plan, raw(data))
    data = body(PLAN)
    data["steps"][0]["when"] = "now"
    assert kind_of(Plan, raw(data)) == "invalid"


def test_oversized_payloads_are_refused_before_parsing() -> None:
    payload = b'{"v":1,"pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    assert kind_of(Plan, payload) == "oversized"
    assert kind_of(Plan, b"\xff" * (MAX_PAYLOAD_BYTES + 1)) == "oversized"


@pytest.mark.parametrize("payload", [b"", b"{", b"plan", b"\xff\xfe", b"{'v': 1}", b"NaN}"])
def test_not_json(payload: bytes) -> None:
    assert kind_of(Plan, payload) == "not_json"


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"v"', b"null", b"true"])
def test_json_that_is_not_an_object(payload: bytes) -> None:
    assert kind_of(Ack, payload) == "invalid"


@pytest.mark.parametrize("v", [0, 2, "1", None, 1.5, [1], {"v": 1}])
def test_wrong_protocol_version(v: object) -> None:
    data = body(Ack(version=1, stage=Stage.ARMED))
    data["v"] = v
    assert kind_of(Ack, raw(data)) == "wrong_version"
    del data["v"]
    assert kind_of(Ack, raw(data)) == "wrong_version"


@pytest.mark.parametrize("stage", ["done", "APPLIED", "", 3, None])
def test_unknown_stage(stage: object) -> None:
    assert kind_of(Ack, raw({"v": 1, "version": 1, "stage": stage})) == "unknown_stage"


def test_applied_ack_needs_its_evidence() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(
            Ack, raw({"v": 1, "version": 1, "stage": "applied", "step_at": "2030-01-01T00:00:00Z"})
        )
    assert exc.value.kind == "invalid" and "applied" in exc.value.message


@pytest.mark.parametrize(
    "device", ["Dev-A", "dev/a", "dev+", "dev#", "$sys", "-dev", "", "a" * 49, "dév", "dev\x00"]
)
def test_bad_device_id_in_a_body_is_refused(device: str) -> None:
    data = {"v": 1, "version": 1, "stage": "armed", "device": device}
    assert kind_of(Ack, raw(data)) == "invalid"
    state = {
        "v": 1,
        "device": device,
        "state": {"on": False},
        "reported_at": "2030-01-01T00:00:00Z",
    }
    assert kind_of(DeviceState, raw(state)) == "invalid"


def test_device_id_rules() -> None:
    for good in ["a", "0", "dev-a", "brussels-atomium-1", "a" * 48, "a--b", "a-"]:
        assert is_device_id(good) and check_device_id(good) == good
    for bad in ["A", "-a", "a_b", "a.b", "a b", "a" * 49, "", "a/b", "\uff41"]:
        assert not is_device_id(bad)
        with pytest.raises(ValueError, match="invalid device id"):
            check_device_id(bad)


@pytest.mark.parametrize(
    "stamp", ["2030-07-30T19:45:00", "2030-07-30 19:45:00", "yesterday", "2030-13-01T00:00:00Z"]
)
def test_naive_or_bad_timestamps_are_refused(stamp: str) -> None:
    data = {"v": 1, "version": 1, "issued_at": stamp, "steps": []}
    with pytest.raises(ProtocolError) as exc:
        decode(Plan, raw(data))
    assert exc.value.kind == "invalid" and "issued_at" in exc.value.message


def test_naive_step_instant_is_refused() -> None:
    data = body(PLAN)
    data["steps"][0]["at"] = "2030-07-30T20:00:00"
    with pytest.raises(ProtocolError, match="time zone"):
        decode(Plan, raw(data))


def test_steps_must_be_strictly_increasing() -> None:
    data = body(PLAN)
    data["steps"].reverse()
    assert kind_of(Plan, raw(data)) == "invalid"
    data["steps"] = [data["steps"][0], data["steps"][0]]
    assert kind_of(Plan, raw(data)) == "invalid"


def test_plan_size_limits() -> None:
    steps = [PlanStep(at=T0 + timedelta(minutes=i), state=OFF) for i in range(MAX_STEPS + 1)]
    with pytest.raises(ValueError):
        Plan(version=1, issued_at=T0, steps=steps)
    Plan(version=1, issued_at=T0, steps=steps[:MAX_STEPS])
    for version in (1.5, None, [7]):
        data = body(PLAN)
        data["version"] = version
        assert kind_of(Plan, raw(data)) == "invalid", version
    for version in (0, -1, MAX_VERSION + 1, 2**53 + 1, 2**63):
        data = body(PLAN)
        data["version"] = version
        assert kind_of(Plan, raw(data)) == "out_of_range", version


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ({"on": True, "color": "blue"}, "invalid"),
        ({"on": True, "color": "#12345"}, "invalid"),
        ({"on": True, "level": 101}, "out_of_range"),
        ({"on": True, "level": -1}, "out_of_range"),
        ({"on": True, "level": 2**63}, "out_of_range"),
        ({"on": True, "transition_s": -1}, "out_of_range"),
        ({"on": True, "transition_s": 1e308}, "out_of_range"),
        ({"on": "maybe"}, "invalid"),
        ({"color": "#FFFFFF"}, "invalid"),
    ],
)
def test_bad_light_states(state: dict[str, object], kind: str) -> None:
    data = body(PLAN)
    data["steps"][0]["state"] = state
    assert kind_of(Plan, raw(data)) == kind


def test_light_state_colour_and_matching() -> None:
    assert LightState(on=True, color="#abcdef").color == "#ABCDEF"
    assert LightState(on=False, color="#FF0000").matches(OFF)
    assert BLUE.matches(BLUE.model_copy(update={"transition_s": 0}))
    assert not BLUE.matches(BLUE.model_copy(update={"level": 79}))
    assert not BLUE.matches(OFF)


def test_reason_is_bounded() -> None:
    assert (
        kind_of(Ack, raw({"v": 1, "version": 1, "stage": "failed", "reason": "x" * 501}))
        == "invalid"
    )


def test_step_in_effect() -> None:
    first, second = PLAN.steps
    assert PLAN.step_at(first.at - timedelta(seconds=1)) is None
    assert PLAN.step_at(first.at) == first
    assert PLAN.step_at(second.at - timedelta(milliseconds=1)) == first
    assert PLAN.step_at(second.at + timedelta(days=1)) == second


def test_models_are_frozen() -> None:
    with pytest.raises(ValueError):
        PLAN.version = 8  # type: ignore[misc]


# ---------------------------------------------------------------------- topics


def test_topics_build() -> None:
    topics = Topics()
    assert topics.plan("dev-a") == "illuminate/v1/devices/dev-a/plan"
    assert topics.ack("dev-a") == "illuminate/v1/devices/dev-a/ack"
    assert topics.state("dev-a") == "illuminate/v1/devices/dev-a/state"
    assert topics.status("dev-a") == "illuminate/v1/devices/dev-a/status"
    assert topics.controller_status == "illuminate/v1/controller/status"
    assert topics.device_filter(Kind.ACK) == "illuminate/v1/devices/+/ack"
    other = Topics("city/brussels_1")
    assert other.plan("x") == "city/brussels_1/devices/x/plan"


@pytest.mark.parametrize("device", ["Dev", "a/b", "+", "#", "", "a" * 49])
def test_topics_refuse_bad_ids(device: str) -> None:
    with pytest.raises(ValueError):
        Topics().plan(device)


@pytest.mark.parametrize(
    "root", ["", "/illuminate", "illuminate/", "a//b", "a/#", "a/+", "a b", "$SYS"]
)
def test_topics_refuse_bad_roots(root: str) -> None:
    with pytest.raises(ValueError, match="topic root"):
        Topics(root)


def test_topics_parse_round_trips() -> None:
    topics = Topics()
    for kind in Kind:
        assert topics.parse(topics.device("dev-a", kind)) == DeviceTopic("dev-a", kind)


@pytest.mark.parametrize(
    "topic",
    [
        "illuminate/v2/devices/dev-a/ack",
        "other/illuminate/v1/devices/dev-a/ack",
        "illuminate/v1/controller/status",
        "illuminate/v1/devices/dev-a",
        "illuminate/v1/devices/dev-a/ack/extra",
        "illuminate/v1/devices/Dev-A/ack",
        "illuminate/v1/devices/+/ack",
        "illuminate/v1/devices//ack",
        "illuminate/v1/devices/dev-a/command",
        "illuminate/v1/devices/dev-a/ACK",
        "illuminate/v1/devicesX/dev-a/ack",
        "",
    ],
)
def test_topics_parse_rejects_foreign_topics(topic: str) -> None:
    assert Topics().parse(topic) is None


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ('{"v":1,"version":"7","stage":"received"}', "invalid"),
        ('{"v":1,"version":7.0,"stage":"received"}', "invalid"),
        ('{"v":true,"version":7,"stage":"received"}', "wrong_version"),
        ('{"v":1.0,"version":7,"stage":"received"}', "wrong_version"),
        ('{"v":1,"version":7,"stage":"received","step_at":1893456000}', "invalid"),
        (
            '{"v":1,"version":7,"stage":"applied","step_at":"2026-07-30T19:30:00Z",'
            '"applied_at":"2026-07-30T19:30:00Z","state":{"on":"yes"}}',
            "invalid",
        ),
    ],
)
def test_no_coercion_of_wire_values(body, kind):
    with pytest.raises(ProtocolError) as err:
        decode(Ack, body.encode())
    assert err.value.kind == kind


def test_a_birth_without_plan_version_still_decodes_and_a_bad_one_is_refused() -> None:
    old_agent = b'{"v":1,"online":true,"firmware":"fw/0","since":"2026-07-30T19:30:00Z"}'
    assert decode(DeviceStatus, old_agent).plan_version is None
    with pytest.raises(ProtocolError):
        decode(DeviceStatus, b'{"v":1,"online":true,"plan_version":0}')
    with pytest.raises(ProtocolError):
        decode(DeviceStatus, b'{"v":1,"online":true,"plan_version":"7"}')
