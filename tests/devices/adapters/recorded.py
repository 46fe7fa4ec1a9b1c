"""Recorded vendor messages (fixtures/*.json), and `fold`, which merges their reported states."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from devices.adapters import Adapter, Report, Reported, adapter_for

FIXTURES = Path(__file__).parent / "fixtures"
FILES = {
    "wled": "wled",
    "tasmota": "tasmota",
    "zigbee2mqtt": "zigbee2mqtt",
    "ha-json": "ha_json",
    "shelly-gen2": "shelly_gen2",
    "shelly-gen1": "shelly_gen1",
}


@cache
def _load(adapter: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{FILES[adapter]}.json").read_text())
    return data


def device(adapter: str) -> Adapter:
    """The adapter for the device the recordings came from."""
    return adapter_for(adapter, _load(adapter)["device"])


def message(adapter: str, name: str) -> tuple[str, bytes]:
    entry = _load(adapter)["messages"][name]
    return entry["topic"], entry["payload"].encode()


def names(adapter: str) -> list[str]:
    return list(_load(adapter)["messages"])


def fold(adapter: Adapter, kind: str, *names_: str) -> Reported:
    """Parse the named recordings in order and merge their reported states."""
    state = Reported()
    for name in names_:
        parsed = adapter.parse(*message(kind, name))
        assert isinstance(parsed, Report), (name, parsed)
        if parsed.state is not None:
            state = state.merged(parsed.state)
    return state
