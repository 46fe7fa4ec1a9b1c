"""The `illuminate` command: help, clear errors, and the registry commands on SQLite."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import controller
from controller.cli import build_parser, main
from controller.registration import verify_secret
from tests.support.stores import data_dir_database, secret_hash

BELGIUM = Path(controller.__file__).parent / "demo" / "belgium.yaml"
COMMANDS = [
    "demo",
    "serve",
    "agent",
    "simulate",
    "users",
    "devices",
    "sites",
    "campaigns",
    "schedules",
    "rollouts",
]

CAMPAIGN = """\
id: blue-heart
title: {en: Blue Heart}
color: "#009edb"
level: 80
windows:
  - targets: {all: true}
    dates: [2025-06-10]
    start: {at: "21:00"}
    end: {at: "23:00"}
"""


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


def test_help_exits_0_and_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: illuminate ")
    listed = re.findall(r"(?m)^ {4}(\w+) ", out)
    assert listed == COMMANDS


def test_the_parser_knows_every_command() -> None:
    parser = build_parser()
    assert parser.prog == "illuminate"
    for command in COMMANDS[:2]:
        args = parser.parse_args([command])
        assert args.command == command
        assert callable(args.func)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_serve_with_a_missing_config_returns_2_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "serve", "--config", "missing.toml")
    assert code == 2
    assert out == ""
    assert err == "illuminate: error: missing.toml: no such settings file\n"
    assert "Traceback" not in err


def test_invalid_settings_file_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bad.toml").write_text('[broker]\nurl = "http://nope"\n')
    code, _, err = run(capsys, "sites", "list", "--config", "bad.toml")
    assert code == 2
    assert err.startswith("illuminate: error: invalid settings (bad.toml):")
    assert "broker.url" in err
    assert "Traceback" not in err


def test_sites_import_devices_add_and_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "sites", "import", str(BELGIUM))
    assert (code, err) == (0, "")
    assert out == f"imported 15 cities and 30 sites from {BELGIUM}\n"
    assert (tmp_path / "illuminate.sqlite").is_file()

    code, out, _ = run(capsys, "sites", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "30 sites in 15 cities"
    assert re.fullmatch(r"atomium +brussels +50\.89493 +4\.34194", lines[2])

    code, out, _ = run(capsys, "devices", "add", "dev-01", "--site", "atomium")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "registered device dev-01 at site atomium"
    assert lines[1] == "MQTT username: dev-01"
    password = lines[2].removeprefix("MQTT password: ")
    assert len(password) >= 20
    assert lines[3] == "(shown once; keep it safe)"

    code, out, _ = run(
        capsys, "devices", "add", "dev-02", "--site", "menin-gate", "--password", "pw-02"
    )
    assert code == 0
    assert out == "registered device dev-02 at site menin-gate\n"  # a given password is not echoed

    code, out, _ = run(capsys, "devices", "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["dev-01", "atomium", "never", "seen", "-"],
        ["dev-02", "menin-gate", "never", "seen", "-"],
        ["2", "devices"],
    ]


def test_devices_list_shows_the_last_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    assert run(capsys, "devices", "add", "dev-01", "--site", "atomium", "--password", "x")[0] == 0
    assert run(capsys, "devices", "add", "dev-02", "--site", "atomium", "--password", "y")[0] == 0
    now = datetime(2025, 6, 10, 19, 0, 5, tzinfo=UTC)
    with data_dir_database(tmp_path) as (_, _, stores):
        views = stores.reports.views()
        saved = stores.reports.save(
            [
                replace(
                    views["dev-01"],
                    online=True,
                    status_at=now,
                    firmware="1.2.3",
                    applied_version=3,
                    applied_step_at=datetime(2025, 6, 10, 19, 0, tzinfo=UTC),
                    applied_state={"on": True},
                    applied_at=now,
                ),
                replace(views["dev-02"], online=False, status_at=now),
            ]
        )
    assert saved == 2
    code, out, _ = run(capsys, "devices", "list")
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["dev-01", "atomium", "online", "v3", "step", "2025-06-10", "19:00:00Z"],
        ["dev-02", "atomium", "offline", "-"],
        ["2", "devices"],
    ]


def test_devices_add_keeps_scrypt_for_chosen_passwords(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A password a person chose may be guessable: scrypt. A drawn one: salted SHA-256."""
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    argv = ("devices", "add", "chosen", "--site", "atomium", "--password", "pw-chosen")
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, "devices", "add", "drawn", "--site", "atomium")
    assert code == 0
    drawn_password = out.splitlines()[2].removeprefix("MQTT password: ")
    with data_dir_database(tmp_path) as (_, sessions, _):
        chosen, drawn = secret_hash(sessions, "chosen"), secret_hash(sessions, "drawn")
    assert chosen is not None and chosen.startswith("scrypt$")
    assert drawn is not None and drawn.startswith("sha256$")
    assert verify_secret("pw-chosen", chosen)
    assert verify_secret(drawn_password, drawn)


@pytest.mark.parametrize(
    ("device_id", "message"),
    [
        ("Bad_ID", "invalid device id 'Bad_ID'"),
        ("dev/01", "invalid device id 'dev/01'"),
        ("illuminate-ctl", "device ids starting with 'illuminate' are reserved"),
    ],
)
def test_devices_add_with_a_bad_id_returns_2(
    capsys: pytest.CaptureFixture[str], device_id: str, message: str
) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    code, out, err = run(capsys, "devices", "add", device_id, "--site", "atomium")
    assert code == 2
    assert out == ""
    assert err.startswith(f"illuminate: error: {message}")
    assert "Traceback" not in err
    assert "MQTT password" not in out + err


def test_devices_add_at_an_unknown_site_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    code, out, err = run(capsys, "devices", "add", "dev-01", "--site", "nowhere")
    assert code == 2
    assert out == ""
    assert err == "illuminate: error: unknown site 'nowhere'\n"
    assert run(capsys, "devices", "list")[1] == "0 devices\n"


def test_devices_add_twice_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sites", "import", str(BELGIUM))[0] == 0
    assert run(capsys, "devices", "add", "dev-01", "--site", "atomium", "--password", "a")[0] == 0
    code, _, err = run(capsys, "devices", "add", "dev-01", "--site", "atomium")
    assert code == 2
    assert err == "illuminate: error: device 'dev-01' is already registered\n"


def test_sites_import_of_a_bad_file_names_file_and_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "sites.yaml"
    bad.write_text(
        "cities: [{id: x, name: {en: X}, timezone: Europe/Brussels}]\n"
        "sites: [{id: s, city: y, name: {en: S}, lat: 1, lon: 2}]\n"
    )
    code, _, err = run(capsys, "sites", "import", str(bad))
    assert code == 2
    assert str(bad) in err
    assert "sites[0].city: unknown city 'y'" in err


def test_schedules_apply_creates_then_updates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "blue.yaml"
    path.write_text(CAMPAIGN)
    code, out, _ = run(capsys, "schedules", "apply", str(path))
    assert code == 0
    assert out.splitlines()[0] == "created campaign blue-heart"
    code, out, _ = run(capsys, "schedules", "apply", str(path))
    assert code == 0
    assert out.splitlines()[0] == "updated campaign blue-heart"
    with data_dir_database(tmp_path) as (_, _, stores):
        (stored,) = stores.campaigns.all()
    assert stored.color == "#009EDB"


def test_schedules_apply_with_an_invalid_campaign_names_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CAMPAIGN.replace('"21:00"', '"25:00"').replace('"#009edb"', "blue"))
    code, out, err = run(capsys, "schedules", "apply", str(path))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert f"{path}: windows[0].start.at: time must be HH:MM" in err
    assert f"{path}: color: colour must be #RRGGBB" in err
    with data_dir_database(tmp_path) as (_, _, stores):
        assert stores.campaigns.all() == ()


def test_schedules_apply_with_a_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "schedules", "apply", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert err.startswith(f"illuminate: error: {tmp_path / 'nope.yaml'}: cannot read")
