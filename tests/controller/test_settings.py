"""Settings: a TOML file plus ILLUMINATE_* environment variables, failing fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.settings import Settings, SettingsError, load_settings
from devices.connection import BrokerAddress


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "illuminate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.data_dir == Path("data")
    assert s.broker.url is None
    assert s.broker.username == "illuminate-controller"
    assert s.broker.password is None
    assert s.broker.topic_root == "illuminate/v1"
    assert (s.broker.embedded_host, s.broker.embedded_port) == ("127.0.0.1", 1883)
    assert s.database.url is None
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8000)
    assert s.control.grace_s == 30
    assert s.control.horizon_h == 48
    assert s.control.tick_s == 30
    assert s.control.publish_timeout_s == 30
    assert s.control.upcoming_h == 24
    assert s.topics.root == "illuminate/v1"


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert load_settings().database_url == "sqlite:///data/illuminate.sqlite"
    s = load_settings(data_dir=tmp_path / "state")
    assert s.database_url == f"sqlite:///{tmp_path}/state/illuminate.sqlite"


def test_database_url_when_set_is_used_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql+psycopg://ill@db.example/ill"\n')
    assert load_settings(path).database_url == "postgresql+psycopg://ill@db.example/ill"


def test_values_from_the_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "/var/lib/illuminate"

[broker]
url = "mqtts://broker.example:8883"
username = "ctl"
password = "s3cret"
topic_root = "city/lights"

[http]
port = 8080

[control]
grace_s = 12.5
horizon_h = 72
""",
    )
    s = load_settings(path)
    assert s.data_dir == Path("/var/lib/illuminate")
    assert s.broker.url == "mqtts://broker.example:8883"
    assert s.broker.password is not None
    assert s.broker.password.get_secret_value() == "s3cret"
    assert s.topics.root == "city/lights"
    assert s.http.port == 8080
    assert s.http.host == "127.0.0.1"  # untouched keys keep their defaults
    assert s.control.grace_s == 12.5
    assert s.control.horizon_h == 72
    assert s.control.tick_s == 30
    assert s.database_url == "sqlite:////var/lib/illuminate/illuminate.sqlite"
    assert s.broker.address() == BrokerAddress("broker.example", 8883, True, "ctl", "s3cret")


def test_password_is_not_shown_in_the_settings_repr(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nurl = "mqtt://b:1883"\npassword = "hunter2-secret"\n')
    assert "hunter2-secret" not in repr(load_settings(path))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[broker]\nurl = "mqtt://from-file:1883"\n[http]\nport = 8080\n')
    monkeypatch.setenv("ILLUMINATE_BROKER__URL", "mqtt://from-env:1884")
    s = load_settings(path)
    assert s.broker.url == "mqtt://from-env:1884"
    assert s.http.port == 8080  # the rest of the file still applies
    assert (s.broker.address().host, s.broker.address().port) == ("from-env", 1884)


def test_environment_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("ILLUMINATE_CONTROL__GRACE_S", "5")
    s = load_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.control.grace_s == 5
    assert s.database_url == f"sqlite:///{tmp_path}/d/illuminate.sqlite"


def test_explicit_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", "/from/env")
    assert load_settings(data_dir=Path("/explicit")).data_dir == Path("/explicit")


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nurl = "mqtt://b:1883"\nfrobnicate = true\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    text = str(err.value)
    assert "broker.frobnicate" in text
    assert str(path) in text


def test_unknown_top_level_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "horizon_h = 10\n")
    with pytest.raises(SettingsError, match=r"(?m)^  horizon_h: "):
        load_settings(path)


def test_bad_broker_url_names_broker_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nurl = "http://broker.example"\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert "broker.url" in str(err.value)
    assert "mqtt://" in str(err.value)  # says what would be right


def test_bad_broker_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLUMINATE_BROKER__URL", "mqtt://")
    with pytest.raises(SettingsError, match=r"invalid settings \(environment\)[\s\S]*broker\.url"):
        load_settings()


def test_every_fault_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 70000\n[control]\ngrace_s = 0\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert "http.port" in str(err.value)
    assert "control.grace_s" in str(err.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as err:
        load_settings(missing)
    assert str(missing) in str(err.value)
    assert "no such settings file" in str(err.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker\nurl = \n")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: not valid TOML")


def test_a_directory_is_not_a_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(tmp_path)


def test_address_without_url_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"^broker\.url is not set$"):
        load_settings().broker.address()
