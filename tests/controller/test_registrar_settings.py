"""The registrar as the settings make it: broker accounts provisioned only with a dynsec
admin, and the broker address devices are given."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.broker.dynsec import DynsecAccounts
from controller.broker.local_accounts import LocalAccounts
from controller.registrar import build_registrar
from controller.settings import SettingsError, load_settings
from controller.store.memory import memory_stores
from devices.connection import BrokerAddress


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)


def test_an_external_broker_without_a_dynsec_admin_gets_no_accounts() -> None:
    settings = load_settings(None, broker={"url": "mqtt://10.0.0.5:1883"})
    registrar = build_registrar(settings, memory_stores())
    assert registrar.accounts is None and not registrar.provisions
    assert registrar.endpoint == BrokerAddress("10.0.0.5", 1883)


def test_the_embedded_broker_and_the_hook_use_the_controllers_own_accounts(
    tmp_path: Path,
) -> None:
    embedded = load_settings(None, data_dir=tmp_path)
    registrar = build_registrar(embedded, memory_stores())
    assert isinstance(registrar.accounts, LocalAccounts)
    assert registrar.accounts.path == tmp_path / "broker-accounts.sqlite"
    assert registrar.endpoint == BrokerAddress("127.0.0.1", 1883)
    hooked = load_settings(
        None,
        data_dir=tmp_path,
        broker={"url": "mqtt://emqx.internal:1883"},
        broker_hook={"token": "t" * 32},
    )
    assert isinstance(build_registrar(hooked, memory_stores()).accounts, LocalAccounts)
    given = LocalAccounts.in_folder(tmp_path / "other", embedded.topics)
    assert build_registrar(embedded, memory_stores(), accounts=given).accounts is given


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


def test_an_import_provisions_the_local_accounts_in_one_go(tmp_path: Path) -> None:
    from controller.registration import Batch, DeviceEntry, Row, prepare
    from schedules.model import SiteCatalog

    stores = memory_stores()
    stores.registry.import_catalog(
        SiteCatalog.model_validate(
            {
                "cities": [{"id": "c", "name": {"en": "C"}, "timezone": "Europe/Brussels"}],
                "sites": [{"id": "s", "city": "c", "name": {"en": "S"}, "lat": 1, "lon": 2}],
            }
        )
    )
    settings = load_settings(None, data_dir=tmp_path)
    registrar = build_registrar(settings, stores)
    accounts = registrar.accounts
    assert isinstance(accounts, LocalAccounts)
    accounts.create("d-1", "a stray account from an interrupted registration")
    batch = Batch(tuple(Row(f"line {i}", DeviceEntry(id=f"d-{i}", site="s")) for i in range(3)))
    prepared = prepare(stores.registry, batch)
    registrar.register_batch(prepared, "ada", datetime.now(UTC), "import")
    for c in prepared.credentials:
        assert accounts.login(c.id, c.password, c.id), c.id
