"""Every recording parses without fault, and every one names where it came from."""

from __future__ import annotations

import pytest

from devices.adapters import Malformed
from tests.devices.adapters.recorded import FILES, _load, device, message, names

CASES = [(kind, name) for kind in FILES for name in names(kind)]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_recording_is_read_and_sourced(kind: str, name: str) -> None:
    entry = _load(kind)["messages"][name]
    assert len(entry["source"]) > 10
    adapter = device(kind)
    topic, payload = message(kind, name)
    assert topic in adapter.topics.reports
    assert not isinstance(adapter.parse(topic, payload), Malformed)
