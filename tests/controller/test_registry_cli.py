"""`illuminate devices|sites|campaigns ...`: the registry's changes from the command
line, on SQLite, with their audit entries; and help texts for every command and option.
A real Mosquitto with dynsec: tests/integration/test_registry_cli_broker.py."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

import controller
from controller.access import AuditKind
from controller.cli import build_parser, main
from controller.registration import verify_secret
from controller.registry_cli import actor
from schedules.model import Campaign
from tests.controller.test_staff_api import campaign_body
from tests.support.stores import data_dir_database, secret_hash

BELGIUM = Path(controller.__file__).parent / "demo" / "belgium.yaml"


@pytest.fixture(autouse=True)
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def audit(tmp_path: Path) -> list[tuple[str, AuditKind, str, str | None, str | None]]:
    with data_dir_database(tmp_path) as (_, _, stores):
        assert stores.audit is not None
        entries = reversed(stores.audit.entries())
        return [
            (e.record.actor, e.record.kind, e.record.action, e.record.subject, e.record.city)
            for e in entries
        ]


def test_add_show_rotate_and_decommission_a_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    code, out, err = run(capsys, "devices", "add", "atomium-ctl", "--site", "atomium", "--json")
    assert (code, err) == (0, "")
    issued = json.loads(out)
    first = issued["mqtt"]["password"]
    assert issued["id"] == "atomium-ctl"
    assert (issued["mqtt"]["username"], issued["mqtt"]["client_id"]) == ("atomium-ctl",) * 2
    assert issued["mqtt"]["topics"]["ack"] == "illuminate/v1/devices/atomium-ctl/ack"
    assert (issued["mqtt"]["host"], issued["mqtt"]["port"]) == ("127.0.0.1", 1883)

    code, out, _ = run(capsys, "devices", "rotate", "atomium-ctl")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "new credentials for device atomium-ctl; the old password no longer works"
    second = lines[2].removeprefix("MQTT password: ")
    assert second != first and len(second) >= 32
    assert "MQTT client id: atomium-ctl" in lines
    with data_dir_database(tmp_path) as (_, sessions, stores):
        stored = secret_hash(sessions, "atomium-ctl")
        assert stored is not None and verify_secret(second, stored)
        assert not verify_secret(first, stored)
        assert stores.reports.views()["atomium-ctl"].online is False

    code, out, _ = run(capsys, "devices", "show", "atomium-ctl")
    assert code == 0
    assert "site: atomium (brussels)" in out
    assert "status: offline" in out
    assert second not in out and first not in out

    code, out, _ = run(capsys, "devices", "decommission", "atomium-ctl")
    assert code == 0
    assert out.startswith("decommissioned device atomium-ctl")
    assert run(capsys, "devices", "list")[1] == "0 devices\n"
    rows = run(capsys, "devices", "list", "--decommissioned")[1].split()
    assert rows[:3] == ["atomium-ctl", "atomium", "decommissioned"]
    code, out, _ = run(capsys, "devices", "show", "atomium-ctl")
    assert "decommissioned: -" not in out

    code, _, err = run(capsys, "devices", "decommission", "atomium-ctl")
    assert (code, err) == (2, "illuminate: error: device 'atomium-ctl' is decommissioned\n")
    code, _, err = run(capsys, "devices", "rotate", "atomium-ctl")
    assert (code, err) == (2, "illuminate: error: device 'atomium-ctl' is decommissioned\n")
    code, _, err = run(capsys, "devices", "add", "atomium-ctl", "--site", "atomium")
    assert (code, err) == (2, "illuminate: error: device 'atomium-ctl' is already registered\n")
    code, _, err = run(capsys, "devices", "rotate", "nothing")
    assert (code, err) == (2, "illuminate: error: no device 'nothing'\n")
    code, _, err = run(capsys, "devices", "show", "nothing")
    assert (code, err) == (2, "illuminate: error: no device 'nothing'\n")

    who = actor()
    assert who.startswith("cli:")
    assert audit(tmp_path) == [
        (who, AuditKind.DEVICE, "registered", "atomium-ctl", "brussels"),
        (who, AuditKind.DEVICE, "credentials-rotated", "atomium-ctl", "brussels"),
        (who, AuditKind.DEVICE, "decommissioned", "atomium-ctl", "brussels"),
    ]


def test_a_chosen_password_on_rotation_is_not_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    assert run(capsys, "devices", "add", "d1", "--site", "atomium", "--password", "a")[0] == 0
    code, out, _ = run(capsys, "devices", "rotate", "d1", "--password", "pw-chosen")
    assert code == 0
    assert "pw-chosen" not in out
    with data_dir_database(tmp_path) as (_, sessions, _):
        stored = secret_hash(sessions, "d1")
    assert (
        stored is not None and stored.startswith("scrypt$") and verify_secret("pw-chosen", stored)
    )


def test_sites_set_and_delete(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    argv = ["sites", "set", "mini-europe", "--city", "brussels", "--name", "en=Mini-Europe"]
    argv += ["--name", "fr=Mini-Europe FR", "--lat", "50.845", "--lon", "4.35", "--tag", "fountain"]
    code, out, _ = run(capsys, *argv)
    assert (code, out) == (0, "created site mini-europe in brussels\n")
    code, out, _ = run(capsys, *argv[:-2])
    assert (code, out) == (0, "replaced site mini-europe in brussels\n")
    with data_dir_database(tmp_path) as (_, _, stores):
        site = {s.id: s for s in stores.registry.catalog().sites}["mini-europe"]
    assert dict(site.name) == {"en": "Mini-Europe", "fr": "Mini-Europe FR"}
    assert site.tags == ()

    other = ("--name", "en=X", "--lat", "1", "--lon", "2")
    code, _, err = run(capsys, "sites", "set", "x", "--city", "atlantis", *other)
    assert (code, err) == (2, "illuminate: error: unknown city 'atlantis'\n")
    code, _, err = run(
        capsys, "sites", "set", "x", "--city", "brussels", *other[:2], "--lat", "91", "--lon", "4"
    )
    assert code == 2 and "lat: Input should be less than or equal to 90" in err

    assert (
        run(capsys, "devices", "add", "me-ctl", "--site", "mini-europe", "--password", "p")[0] == 0
    )
    code, _, err = run(capsys, "sites", "delete", "mini-europe")
    assert code == 2
    assert "has 1 device in service (me-ctl): decommission them first" in err
    assert run(capsys, "devices", "decommission", "me-ctl")[0] == 0
    code, out, _ = run(capsys, "sites", "delete", "mini-europe")
    assert (code, out) == (0, "deleted site mini-europe\n")
    assert "mini-europe" not in run(capsys, "sites", "list")[1]
    code, _, err = run(capsys, "sites", "delete", "mini-europe")
    assert (code, err) == (2, "illuminate: error: no site 'mini-europe'\n")
    sites = [e for e in audit(tmp_path) if e[1] is AuditKind.SITE]
    assert [(e[2], e[3], e[4]) for e in sites] == [
        ("created", "mini-europe", "brussels"),
        ("replaced", "mini-europe", "brussels"),
        ("deleted", "mini-europe", "brussels"),
    ]


def test_campaigns_list_and_delete(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with data_dir_database(tmp_path) as (_, _, stores):
        stores.campaigns.put(Campaign.model_validate(campaign_body()), datetime.now(UTC))
    code, out, _ = run(capsys, "campaigns", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["blue-heart", "60", "Blue", "Heart"]
    assert out.splitlines()[-1] == "1 campaigns"
    code, out, _ = run(capsys, "campaigns", "delete", "blue-heart")
    assert code == 0 and out.startswith("deleted campaign blue-heart\n")
    assert run(capsys, "campaigns", "list")[1] == "0 campaigns\n"
    code, _, err = run(capsys, "campaigns", "delete", "blue-heart")
    assert (code, err) == (2, "illuminate: error: no campaign 'blue-heart'\n")
    assert audit(tmp_path) == [(actor(), AuditKind.CAMPAIGN, "deleted", "blue-heart", None)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("group", ["devices", "sites", "campaigns"])
def test_every_command_and_option_has_a_help_text(group: str) -> None:
    commands = _subparsers(build_parser())
    top = commands[group]
    assert top.description
    actions = _subparsers(top)
    assert actions
    choices = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in choices._choices_actions}
    for name, sub in actions.items():
        assert helps.get(name), f"{group} {name}: no help in the list of actions"
        assert sub.description, f"{group} {name}: no description"
        for option in sub._actions:
            if isinstance(option, argparse._HelpAction):
                continue
            assert option.help, f"{group} {name} {option.dest}: no help"
