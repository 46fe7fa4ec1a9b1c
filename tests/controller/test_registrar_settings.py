"""The registrar as the settings make it: broker accounts provisioned only with a dynsec
admin, and the broker address devices are given."""

from __future__ import annotations

import os

import pytest

from controller.broker.dynsec import DynsecAccounts
from controller.registrar import build_registrar
from controller.settings import SettingsError, load_settings
from controller.store.memory import memory_stores
from devices.connection import BrokerAddress


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)


def test_no_dynsec_admin_no_accounts() -> None:
    registrar = build_registrar(load_settings(None), memory_stores())
    assert registrar.accounts is None and not registrar.provisions
    assert registrar.endpoint == BrokerAddress("127.0.0.1", 1883)


def test_a_dynsec_admin_provisions_through_the_plugin() -> None:
    settings = load_settings(
        None,
        broker={
            "url": "mqtts://broker.internal:8883",
            "device_url": "mqtts://mqtt.example.org:8884",
            "dynsec_admin_username": "illuminate-admin",
            "dynsec_admin_password": "s3cret",
        },
    )
    registrar = build_registrar(settings, memory_stores())
    assert isinstance(registrar.accounts, DynsecAccounts)
    assert settings.broker.dynsec_admin() == BrokerAddress(
        "broker.internal", 8883, True, "illuminate-admin", "s3cret"
    )
    assert registrar.endpoint == BrokerAddress("mqtt.example.org", 8884, True)
    assert "s3cret" not in repr(settings)


def test_devices_are_given_the_broker_url_or_the_embedded_one() -> None:
    given = load_settings(None, broker={"url": "mqtt://10.0.0.5:1884"})
    assert given.broker.device_endpoint() == BrokerAddress("10.0.0.5", 1884)
    embedded = load_settings(None)
    assert embedded.broker.device_endpoint("mqtt://127.0.0.1:40001") == BrokerAddress(
        "127.0.0.1", 40001
    )


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"url": "mqtt://b:1883", "dynsec_admin_username": "a"}, "set dynsec_admin_username and"),
        ({"url": "mqtt://b:1883", "dynsec_admin_password": "p"}, "set dynsec_admin_username and"),
        ({"dynsec_admin_username": "a", "dynsec_admin_password": "p"}, "needs broker.url"),
        ({"device_url": "http://x"}, "broker.device_url"),
    ],
)
def test_bad_dynsec_settings_are_refused(broker: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(None, broker=broker)
