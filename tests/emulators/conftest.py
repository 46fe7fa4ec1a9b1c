from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.base import EMULATOR_ACCOUNTS
from tests.support.mosquitto import Mosquitto


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One private Mosquitto (the test rig's ACL) for this module's tests, with the
    emulators' accounts; each test uses topics of its own."""
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"), users=dict(EMULATOR_ACCOUNTS))
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()
