"""`illuminate devices add|register --adapter NAME --adapter-config JSON`: a third-party
controller registered from the command line, on the database and through a served
staff API (real HTTP, real SQLite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import controller
from controller.broker.local_accounts import LocalAccounts
from controller.cli import main
from devices.protocol import Topics
from tests.controller.test_devices_api import Served, served  # noqa: F401

BELGIUM = Path(controller.__file__).parent / "demo" / "belgium.yaml"
WLED = '{"topic": "wled/atomium"}'


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_devices_add_registers_a_wled_with_its_scoped_account(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sites", "import", str(BELGIUM)]) == 0
    capsys.readouterr()
    argv = ["devices", "add", "atomium-wled", "--site", "atomium", "--adapter", "wled"]
    assert main([*argv, "--adapter-config", WLED, "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["mqtt"]["topics"]["commands"] == ["wled/atomium/api"]
    accounts = LocalAccounts.in_folder(data_dir, Topics())  # the embedded broker's
    assert accounts.login("atomium-wled", issued["mqtt"]["password"], "atomium-wled")
    assert accounts.may_publish("atomium-wled", "wled/atomium/g")
    assert not accounts.may_publish("atomium-wled", "illuminate/v1/devices/atomium-wled/ack")
    assert main(["devices", "show", "atomium-wled"]) == 0
    assert "adapter: wled" in capsys.readouterr().out


def test_devices_add_refuses_a_bad_config_and_bad_json(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sites", "import", str(BELGIUM)]) == 0
    capsys.readouterr()
    argv = ["devices", "add", "w-1", "--site", "atomium", "--adapter", "wled"]
    assert main([*argv, "--adapter-config", '{"topic": "wled/#"}']) != 0
    assert "must not contain" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--adapter-config", "{nope"])
    assert "not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--adapter-config", "[1]"])
    assert "JSON object" in capsys.readouterr().err


def test_devices_register_a_tasmota_through_the_api_prints_its_topics(
    served: Served,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ILLUMINATE_TOKEN", served.tokens["technician"])
    secret = tmp_path / "fountain.pw"
    url = str(served.http.base_url).rstrip("/")
    argv = ["devices", "register", "fountain-ctl", "--site", "atomium", "--url", url]
    argv += ["--adapter", "tasmota", "--adapter-config", '{"topic": "fountain1"}']
    assert main([*argv, "--password-file", str(secret)]) == 0
    out = capsys.readouterr().out
    assert "it reads: cmnd/fountain1/Backlog" in out
    assert "tele/fountain1/LWT" in out and "illuminate agent" not in out
    record = served.stores.registry.devices(["fountain-ctl"])["fountain-ctl"]
    assert (record.adapter, record.config["topic"]) == ("tasmota", "fountain1")
    # a config the adapter refuses: 422 naming the field, and no password file
    bad = tmp_path / "bad.pw"
    argv = ["devices", "register", "bad-ctl", "--site", "atomium", "--url", url]
    argv += ["--adapter", "wled", "--adapter-config", "{}", "--password-file", str(bad)]
    assert main(argv) == 2
    assert "topic: required" in capsys.readouterr().err
    assert not bad.exists()
