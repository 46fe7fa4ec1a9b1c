"""Every test under tests/faults is a fault-injection scenario (marker `faults`)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.broker)
            item.add_marker(pytest.mark.slow)
            # a scenario waits out real outages and windows: its own deadlines fail it first
            item.add_marker(pytest.mark.timeout(900))
