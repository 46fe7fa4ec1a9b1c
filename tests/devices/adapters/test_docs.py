"""The registrations shown in docs/devices.md are accepted by the adapters they name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from devices.adapters import ADAPTER_NAMES, adapter_for

DOC = Path(__file__).resolve().parents[3] / "docs" / "devices.md"
BLOCK = re.compile(r"^```json ([\w-]+)\n(.*?)^```$", re.S | re.M)


def test_every_registration_example_is_valid_and_every_adapter_has_one() -> None:
    examples = BLOCK.findall(DOC.read_text())
    for name, body in examples:
        adapter_for(name, json.loads(body))
    assert {name for name, _ in examples} == set(ADAPTER_NAMES)
