"""What every adapter promises: never retained, never raising, a clear refusal of bad config."""

from __future__ import annotations

import pytest

from devices.adapters import (
    ADAPTER_NAMES,
    AdapterConfigError,
    Command,
    Ignored,
    Malformed,
    Strength,
    adapter_for,
)
from devices.protocol import LightState
from tests.devices.adapters.recorded import FILES, device
from tests.devices.adapters.targets import BLUE_80, BLUE_80_FADE, OFF, UN_BLUE_80

TARGETS = [
    BLUE_80,
    BLUE_80_FADE,
    UN_BLUE_80,
    OFF,
    LightState(on=True, color="#FFFFFF", level=100),
    LightState(on=True, color="#000000", level=100),
    LightState(on=True, color="#0000FF", level=0),
    LightState(on=True, color="#010000", level=1, transition_s=3600),
]


def test_registry_names() -> None:
    assert set(ADAPTER_NAMES) == {
        "wled",
        "tasmota",
        "zigbee2mqtt",
        "ha-json",
        "shelly-gen2",
        "shelly-gen1",
    }
    assert set(ADAPTER_NAMES) == set(FILES)


def test_unknown_adapter_and_bad_config_shape() -> None:
    with pytest.raises(AdapterConfigError, match=r"unknown adapter 'native'.*wled"):
        adapter_for("native", {})
    with pytest.raises(AdapterConfigError, match="must be an object"):
        adapter_for("wled", ["topic"])  # type: ignore[arg-type]
    with pytest.raises(AdapterConfigError, match=r"wled config: topic: .*string"):
        adapter_for("wled", {"topic": 42})


@pytest.mark.parametrize("kind", ADAPTER_NAMES)
@pytest.mark.parametrize("target", TARGETS, ids=repr)
def test_commands_are_never_retained_and_stay_in_scope(kind: str, target: LightState) -> None:
    adapter = device(kind)
    commands = adapter.command(target, ref=3)
    assert commands
    for command in commands:
        assert command.retain is False
        assert command.qos == 1
        assert command.topic in adapter.topics.commands
    request = adapter.state_request(ref=4)
    if request is not None:
        assert all(
            c.retain is False and c.topic in adapter.topics.commands for c in request.commands
        )


def test_a_retained_command_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="never retained"):
        Command("cmnd/x/Power", b"ON", retain=True)


@pytest.mark.parametrize("kind", ADAPTER_NAMES)
def test_topics_are_exact_and_distinct(kind: str) -> None:
    topics = device(kind).topics
    for topic in (*topics.reports, *topics.commands):
        assert "+" not in topic and "#" not in topic
    assert not set(topics.reports) & set(topics.commands)


def test_strengths() -> None:
    strengths = {kind: device(kind).strength for kind in ADAPTER_NAMES}
    assert strengths == {
        "wled": Strength.ECHO,
        "tasmota": Strength.ECHO,
        "zigbee2mqtt": Strength.ECHO,
        "ha-json": Strength.ECHO,
        "shelly-gen2": Strength.READBACK,
        "shelly-gen1": Strength.ECHO,
    }


BAD_PAYLOADS = {
    "non-utf8": b"\xff\xfe\x00\x80",
    "latin-1": "état".encode("latin-1"),
    "not json": b"}{",
    "truncated json": b'{"state":',
    "oversized": b"{" + b" " * (64 * 1024) + b"}",
    "deep nesting": b"[" * 60_000,
    "huge integer": b"9" * 5000,
    "nan": b'{"brightness": NaN}',
    "empty": b"",
}


@pytest.mark.parametrize("kind", ADAPTER_NAMES)
@pytest.mark.parametrize("bad", BAD_PAYLOADS, ids=str)
def test_bad_bytes_are_malformed_on_every_topic(kind: str, bad: str) -> None:
    adapter = device(kind)
    for topic in adapter.topics.reports:
        assert isinstance(adapter.parse(topic, BAD_PAYLOADS[bad]), Malformed), topic


@pytest.mark.parametrize("kind", ADAPTER_NAMES)
def test_foreign_topics_and_wrong_types_never_raise(kind: str) -> None:
    adapter = device(kind)
    assert isinstance(adapter.parse("somewhere/else", b"ON"), Ignored)
    topic = adapter.topics.reports[0]
    assert isinstance(adapter.parse(topic, "text"), Malformed)  # type: ignore[arg-type]
    assert isinstance(adapter.parse(None, b"x"), Malformed)  # type: ignore[arg-type]
