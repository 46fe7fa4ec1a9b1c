"""`illuminate devices add|rotate|decommission` with `broker.dynsec_admin_username` set:
the device's account on a real Mosquitto (dynamic-security plugin) changes with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import controller
from controller.broker.dynsec import DynsecAccounts
from controller.cli import main
from devices.protocol import Topics
from tests.support.mosquitto import DYNSEC_ADMIN_PASSWORD, DYNSEC_ADMIN_USER, Mosquitto
from tests.support.mqtt5 import can_connect

pytestmark = pytest.mark.broker

BELGIUM = Path(controller.__file__).parent / "demo" / "belgium.yaml"


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dynsec_mosquitto: Mosquitto
) -> Mosquitto:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ILLUMINATE_BROKER__URL", dynsec_mosquitto.url)
    monkeypatch.setenv("ILLUMINATE_BROKER__DYNSEC_ADMIN_USERNAME", DYNSEC_ADMIN_USER)
    monkeypatch.setenv("ILLUMINATE_BROKER__DYNSEC_ADMIN_PASSWORD", DYNSEC_ADMIN_PASSWORD)
    return dynsec_mosquitto


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_provisions_rotates_and_revokes_broker_accounts(
    capsys: pytest.CaptureFixture[str], configured: Mosquitto
) -> None:
    port = configured.port
    accounts = DynsecAccounts(configured.admin_address, Topics())
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    code, out, err = run(capsys, "devices", "add", "atomium-ctl", "--site", "atomium", "--json")
    assert (code, err) == (0, "")
    first = json.loads(out)["mqtt"]["password"]
    assert can_connect(port, "atomium-ctl", first, "atomium-ctl", mqtt311=True)

    code, out, _ = run(capsys, "devices", "rotate", "atomium-ctl", "--json")
    assert code == 0
    second = json.loads(out)["mqtt"]["password"]
    assert not can_connect(port, "atomium-ctl", first, "atomium-ctl", mqtt311=True)
    assert can_connect(port, "atomium-ctl", second, "atomium-ctl", mqtt311=True)

    assert run(capsys, "devices", "decommission", "atomium-ctl")[0] == 0
    assert not accounts.exists("atomium-ctl")
    assert not can_connect(port, "atomium-ctl", second, "atomium-ctl", mqtt311=True)

    # a broker that cannot be reached changes nothing, and says so
    configured.stop()
    code, _, err = run(capsys, "devices", "add", "other-ctl", "--site", "atomium")
    assert code == 2
    assert "nothing was registered" in err
    configured.start()
    assert run(capsys, "devices", "list")[1] == "0 devices\n"
