from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mosquitto import Mosquitto


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private Mosquitto with the test rig's ACL; add device accounts with add_users."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def dynsec_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private Mosquitto with the dynamic-security plugin, its admin and the
    controller's account; provision devices with DynsecAccounts(admin_address, ...)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-dynsec"), dynsec=True).start()
    try:
        yield broker
    finally:
        broker.stop()
