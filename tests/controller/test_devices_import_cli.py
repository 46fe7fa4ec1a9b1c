"""`illuminate devices import` end to end on a real SQLite file."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from controller.cli import main
from controller.registration import verify_secret
from controller.store.tables import DeviceRow
from tests.support.stores import data_dir_database, secret_hash

SITES = 37
COUNT = 10_000


@pytest.fixture(autouse=True)
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    ids = [f"site-{i:02d}" for i in range(SITES)]
    catalog = {
        "cities": [{"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {"id": s, "city": "ypres", "name": {"en": s}, "lat": 50.85, "lon": 2.89} for s in ids
        ],
    }
    (tmp_path / "sites.yaml").write_text(yaml.safe_dump(catalog))
    assert main(["sites", "import", "sites.yaml"]) == 0
    capsys.readouterr()
    return ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_imports_ten_thousand_devices_with_private_credentials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: list[str]
) -> None:
    with (tmp_path / "devices.csv").open("w", newline="") as f:
        f.write("id,site\n")
        for i in range(COUNT):
            f.write(f"dev-{i:05d},{sites[i % SITES]}\n")

    code, out, err = run(
        capsys, "devices", "import", "devices.csv", "--credentials", "passwords.csv"
    )
    assert code == 0, err
    assert out == (f"registered {COUNT} devices at {SITES} sites; credentials in passwords.csv\n")
    for step in ("reading devices.csv", f"registering {COUNT} devices", "done in "):
        assert step in err

    written = tmp_path / "passwords.csv"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    lines = written.read_text().splitlines()
    assert lines[0] == "id,password"
    assert len(lines) == COUNT + 1  # the header, then one line per device
    credentials = dict(csv.reader(lines[1:]))
    assert len(credentials) == COUNT

    with data_dir_database(tmp_path) as (_, sessions, stores):
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(DeviceRow)) == COUNT
            hashes = {
                r.id: r.secret_hash for r in s.execute(select(DeviceRow.id, DeviceRow.secret_hash))
            }
        views = stores.reports.views({"dev-00038"})
    assert hashes.keys() == credentials.keys()
    assert all(verify_secret(credentials[i], h or "") for i, h in hashes.items())
    assert views["dev-00038"].site_id == sites[1]

    # a second run refuses the existing file, and then the registered ids: nothing changes
    code, out, err = run(
        capsys, "devices", "import", "devices.csv", "--credentials", "passwords.csv"
    )
    assert (code, out) == (2, "")
    assert "passwords.csv exists" in err
    code, out, err = run(
        capsys, "devices", "import", "devices.csv", "--credentials", "again.csv", "--force"
    )
    assert (code, out) == (2, "")
    assert "line 2: device 'dev-00000' is already registered" in err
    assert f"and {COUNT - 100} more" in err
    assert err.rstrip().endswith("nothing was registered")
    assert not (tmp_path / "again.csv").exists()
    assert written.read_text().splitlines() == lines


def test_a_bad_file_registers_nothing_and_lists_every_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: list[str]
) -> None:
    (tmp_path / "devices.yaml").write_text(
        "devices:\n"
        "  - {id: gate-1, site: site-00}\n"
        "  - {id: gate-2, site: nowhere}\n"
        "  - {id: gate-3}\n"
        "  - {id: gate-1, site: site-01}\n"
    )
    code, out, err = run(capsys, "devices", "import", "devices.yaml", "--credentials", "out.yaml")
    assert (code, out) == (2, "")
    assert (
        "illuminate: error: devices.yaml: 3 problems:\n"
        "  line 4 (item 3): device 'gate-3': site: Field required\n"
        "  line 3 (item 2): unknown site 'nowhere'\n"
        "  line 5 (item 4): device 'gate-1' is repeated (first at line 2 (item 1))\n"
        "nothing was registered\n"
    ) in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.yaml").exists()
    with data_dir_database(tmp_path) as (_, _, stores):
        assert stores.registry.device_ids() == set()


def test_yaml_file_and_credentials_on_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: list[str]
) -> None:
    (tmp_path / "devices.yml").write_text(
        "- {id: gate-1, site: site-00}\n- {id: gate-2, site: site-01}\n"
    )
    code, out, err = run(capsys, "devices", "import", "devices.yml", "--credentials", "-")
    assert code == 0, err
    rows = list(csv.DictReader(out.splitlines()))
    assert [r["id"] for r in rows] == ["gate-1", "gate-2"]
    assert all(len(r["password"]) == 32 for r in rows)
    assert "registered 2 devices at 2 sites; credentials in stdout" in err
    with data_dir_database(tmp_path) as (_, _, stores):
        assert stores.registry.device_ids() == {"gate-1", "gate-2"}


def test_usage_errors_come_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: list[str]
) -> None:
    code, _, err = run(capsys, "devices", "import", "missing.csv", "--credentials", "o.csv")
    assert code == 2
    assert "cannot read missing.csv" in err
    (tmp_path / "devices.txt").write_text("id,site\n")
    code, _, err = run(capsys, "devices", "import", "devices.txt", "--credentials", "o.csv")
    assert (code, err) == (
        2,
        "illuminate: error: devices.txt: the name must end in .csv, .yaml or .yml\n",
    )
    code, _, err = run(capsys, "devices", "import", "devices.csv", "--credentials", "o.txt")
    assert code == 2
    assert "o.txt: the name must end in" in err
    assert not (tmp_path / "o.csv").exists()


def test_help_explains_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["devices", "import", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for text in ("id,site", "- {id: menin-gate-ctl, site: menin-gate}", "0600", "--force"):
        assert text in out


def test_devices_add_still_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: list[str]
) -> None:
    code, out, _ = run(capsys, "devices", "add", "solo", "--site", "site-00")
    assert code == 0
    password = out.splitlines()[2].removeprefix("MQTT password: ")
    code, _, err = run(capsys, "devices", "add", "solo", "--site", "site-00")
    assert (code, err) == (2, "illuminate: error: device 'solo' is already registered\n")
    with data_dir_database(tmp_path) as (_, sessions, _):
        stored = secret_hash(sessions, "solo")
    assert stored is not None
    assert verify_secret(password, stored)
