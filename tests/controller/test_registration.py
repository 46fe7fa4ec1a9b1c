"""Bulk registration's core: file parsing, the checks, hashes, and the credentials file.

The registry is the SQL one (`stores.registry`) on SQLite in tmp_path.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from controller.registration import (
    MAX_REPORTED_PROBLEMS,
    Batch,
    CredentialsFile,
    ImportRejected,
    ProblemKind,
    commit,
    hash_chosen_secret,
    hash_generated_secret,
    load_file,
    new_password,
    parse_csv,
    parse_request,
    parse_yaml,
    prepare,
    register,
    verify_secret,
)
from controller.store.base import NewDevice, RegistryStore
from controller.store.tables import DeviceRow
from schedules.model import SiteCatalog
from tests.support.stores import secret_hash, sql_database

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {"id": s, "city": "ypres", "name": {"en": s}, "lat": 50.85, "lon": 2.89}
            for s in ("menin-gate", "cloth-hall")
        ],
    }
)


@dataclass(frozen=True)
class Db:
    registry: RegistryStore
    sessions: sessionmaker[Session]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    with sql_database("sqlite", tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        yield Db(stores.registry, sessions)


def add(registry: RegistryStore, device_id: str, site_id: str) -> None:
    """Someone registers one device (without a password) directly in the registry."""
    registry.add_devices([NewDevice(device_id, site_id)], NOW)


def pairs(batch: Batch) -> list[tuple[str, str, str]]:
    return [(r.where, r.entry.id, r.entry.site) for r in batch.rows]


def messages(batch: Batch) -> list[str]:
    return [str(p) for p in batch.problems]


# CSV ------------------------------------------------------------------------------------


def test_csv_reads_rows_with_their_lines() -> None:
    text = "\ufeffsite , id\r\n menin-gate , gate-1\r\n\r\ncloth-hall,hall-1\r\n"
    batch = parse_csv(text.removeprefix("\ufeff"))
    assert batch.problems == ()
    assert pairs(batch) == [
        ("line 2", "gate-1", "menin-gate"),
        ("line 4", "hall-1", "cloth-hall"),
    ]


def test_csv_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "devices.CSV"
    path.write_bytes("\ufeffid,site\ngate-1,menin-gate\n".encode())
    assert pairs(load_file(path)) == [("line 2", "gate-1", "menin-gate")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["line 1: the file is empty; start it with 'id,site'"]),
        (
            "id,site,notes\na,menin-gate,x\n",
            ["line 1: unknown column 'notes': the columns are id and site"],
        ),
        ("id\na\n", ["line 1: column 'site' is missing"]),
        ("id,site,id\n", ["line 1: column 'id' is repeated"]),
        (
            "device,site\n",
            [
                "line 1: unknown column 'device': the columns are id and site",
                "line 1: column 'id' is missing",
            ],
        ),
    ],
)
def test_csv_header_faults(text: str, expected: list[str]) -> None:
    batch = parse_csv(text)
    assert batch.rows == ()
    assert messages(batch) == expected


def test_csv_reports_every_bad_row_and_keeps_the_good_ones() -> None:
    text = (
        "id,site\n"
        "gate-1,menin-gate\n"
        "gate-2\n"
        "gate-3,menin-gate,extra\n"
        ",menin-gate\n"
        "gate-5,\n"
        '"gate-6","cloth-hall"\n'
    )
    batch = parse_csv(text)
    assert pairs(batch) == [
        ("line 2", "gate-1", "menin-gate"),
        ("line 7", "gate-6", "cloth-hall"),
    ]
    assert messages(batch) == [
        "line 3: 1 cell, the header has 2",
        "line 4: 3 cells, the header has 2",
        "line 5: id: String should have at least 1 character",
        "line 6: device 'gate-5': site: String should have at least 1 character",
    ]


def test_csv_that_is_not_csv_is_reported_with_its_line() -> None:
    batch = parse_csv('id,site\ngate-1,menin-gate\n"gate-2,menin-gate\n')
    assert [p.where for p in batch.problems] == ["line 3"]
    assert "not valid CSV" in messages(batch)[0]


# YAML -----------------------------------------------------------------------------------


def test_yaml_list_and_mapping_forms() -> None:
    listed = parse_yaml("- {id: gate-1, site: menin-gate}\n- id: hall-1\n  site: cloth-hall\n")
    assert listed.problems == ()
    assert pairs(listed) == [
        ("line 1 (item 1)", "gate-1", "menin-gate"),
        ("line 2 (item 2)", "hall-1", "cloth-hall"),
    ]
    mapped = parse_yaml("# fleet\ndevices:\n  - {id: gate-1, site: menin-gate}\n")
    assert pairs(mapped) == [("line 3 (item 1)", "gate-1", "menin-gate")]


def test_yaml_reports_every_bad_item_with_line_and_id() -> None:
    text = (
        "devices:\n"
        "  - {id: gate-1, site: menin-gate, colour: blue}\n"
        "  - {id: 42, site: menin-gate}\n"
        "  - {site: no}\n"
        "  - just-a-string\n"
        "  - {id: gate-5, site: cloth-hall}\n"
    )
    batch = parse_yaml(text)
    assert pairs(batch) == [("line 6 (item 5)", "gate-5", "cloth-hall")]
    assert messages(batch) == [
        "line 2 (item 1): device 'gate-1': colour: Extra inputs are not permitted",
        "line 3 (item 2): id: Input should be a valid string",
        "line 4 (item 3): id: Field required",
        "line 5 (item 4): Input should be a valid dictionary or instance of DeviceEntry",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "(top): expected a list of {id, site} or a mapping {devices: [...]}"),
        ("just text\n", "(top): expected a list of {id, site} or a mapping {devices: [...]}"),
        ("devices: {id: a}\n", "(top): devices: Input should be a valid list"),
        ("devices: []\nsites: []\n", "(top): sites: Extra inputs are not permitted"),
        ("[unclosed\n", "(top): not valid YAML"),
    ],
)
def test_yaml_top_level_faults(text: str, expected: str) -> None:
    batch = parse_yaml(text)
    assert batch.rows == ()
    assert messages(batch)[0].startswith(expected)


def test_load_file_picks_the_format_by_name(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("- {id: gate-1, site: menin-gate}\n")
    assert pairs(load_file(tmp_path / "d.yml"))[0][1:] == ("gate-1", "menin-gate")
    (tmp_path / "d.txt").write_text("id,site\n")
    with pytest.raises(ValueError, match=r"must end in \.csv, \.yaml or \.yml"):
        load_file(tmp_path / "d.txt")
    (tmp_path / "bad.csv").write_bytes(b"id,site\n\xff\xfe,x\n")
    assert messages(load_file(tmp_path / "bad.csv")) == ["(top): not UTF-8 (byte 8)"]


# the API body ---------------------------------------------------------------------------


def test_request_body_shape_and_limit() -> None:
    good = parse_request({"devices": [{"id": "gate-1", "site": "menin-gate"}]})
    assert pairs(good) == [("devices[0]", "gate-1", "menin-gate")]
    assert messages(parse_request([])) == [
        "(top): Input should be a valid dictionary or instance of DeviceList"
    ]
    assert messages(parse_request({"device": []})) == [
        "devices: Field required",
        "device: Extra inputs are not permitted",
    ]
    many = {"devices": [{"id": f"d-{i}", "site": "menin-gate"} for i in range(3)]}
    assert messages(parse_request(many, limit=2)) == [
        "devices: at most 2 devices per request, not 3"
    ]


# checks against the registry --------------------------------------------------------------


def test_every_problem_is_reported_and_nothing_registered(db: Db) -> None:
    add(db.registry, "taken", "menin-gate")
    text = (
        "id,site\n"
        "gate-1,menin-gate\n"  # fine
        "taken,menin-gate\n"
        "Bad_Id,menin-gate\n"
        "illuminate-x,menin-gate\n"
        "gate-5,nowhere\n"
        "gate-1,cloth-hall\n"
        "gate-7\n"
    )
    with pytest.raises(ImportRejected) as caught:
        prepare(db.registry, parse_csv(text))
    problems = caught.value.problems
    assert [str(p) for p in problems] == [
        "line 8: 1 cell, the header has 2",
        "line 3: device 'taken' is already registered",
        "line 4: invalid device id 'Bad_Id': use 1-48 lower-case letters, digits and '-',"
        " starting with a letter or digit",
        "line 5: device ids starting with 'illuminate' are reserved: 'illuminate-x'",
        "line 6: unknown site 'nowhere'",
        "line 7: device 'gate-1' is repeated (first at line 2)",
    ]
    assert [p.kind for p in problems] == [
        ProblemKind.INVALID,
        ProblemKind.REGISTERED,
        ProblemKind.INVALID,
        ProblemKind.RESERVED,
        ProblemKind.UNKNOWN_SITE,
        ProblemKind.REPEATED,
    ]
    assert [p.device_id for p in problems[1:]] == [
        "taken",
        "Bad_Id",
        "illuminate-x",
        "gate-5",
        "gate-1",
    ]
    assert not caught.value.only_registered
    assert str(caught.value).startswith("6 problems:\n  line 8: ")
    assert db.registry.device_ids() == {"taken"}


def test_only_registered_ids_is_a_conflict(db: Db) -> None:
    add(db.registry, "taken", "menin-gate")
    with pytest.raises(ImportRejected) as caught:
        register(db.registry, parse_csv("id,site\ntaken,cloth-hall\nfree,cloth-hall\n"), NOW)
    assert caught.value.only_registered
    assert db.registry.device_ids() == {"taken"}


def test_an_empty_batch_is_refused(db: Db) -> None:
    with pytest.raises(ImportRejected, match=r"\(top\): no devices to register"):
        prepare(db.registry, parse_csv("id,site\n\n"))


def test_the_report_stops_at_a_sane_limit(db: Db) -> None:
    text = "id,site\n" + "".join(f"d-{i},nowhere\n" for i in range(MAX_REPORTED_PROBLEMS + 7))
    with pytest.raises(ImportRejected) as caught:
        prepare(db.registry, parse_csv(text))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{MAX_REPORTED_PROBLEMS + 7} problems:"
    assert lines[-1] == "  and 7 more"
    assert len(lines) == MAX_REPORTED_PROBLEMS + 2
    assert len(caught.value.problems) == MAX_REPORTED_PROBLEMS + 7


def test_a_registration_made_between_prepare_and_commit_is_caught(db: Db) -> None:
    prepared = prepare(db.registry, parse_csv("id,site\ngate-1,menin-gate\ngate-2,menin-gate\n"))
    add(db.registry, "gate-2", "cloth-hall")  # someone else, meanwhile
    with pytest.raises(ImportRejected) as caught:
        commit(db.registry, prepared, NOW)
    assert [str(p) for p in caught.value.problems] == [
        "line 3: device 'gate-2' is already registered"
    ]
    assert db.registry.device_ids() == {"gate-2"}


def test_register_stores_hashes_that_verify(db: Db) -> None:
    done = register(db.registry, parse_yaml("- {id: gate-1, site: menin-gate}\n"), NOW)
    assert done.sites == 1
    [credential] = done.credentials
    assert credential.id == "gate-1"
    assert len(credential.password) == 32
    with db.sessions() as s:
        row = s.get(DeviceRow, "gate-1")
        assert row is not None
        assert row.created_at == NOW
    stored = secret_hash(db.sessions, "gate-1")
    assert stored is not None
    assert stored.startswith("sha256$")
    assert credential.password not in stored
    assert verify_secret(credential.password, stored)
    assert not verify_secret(credential.password + "x", stored)


# hashes ---------------------------------------------------------------------------------


def test_both_hash_schemes_verify_and_differ_by_salt() -> None:
    password = new_password()
    assert password != new_password()
    fast = hash_generated_secret(password)
    slow = hash_chosen_secret("chosen by a person")
    assert fast.startswith("sha256$") and slow.startswith("scrypt$")
    assert fast != hash_generated_secret(password)  # salted
    assert verify_secret(password, fast)
    assert verify_secret("chosen by a person", slow)
    assert not verify_secret("chosen by a person!", slow)
    assert not verify_secret(password, slow)
    for broken in ("", "sha256$zz$00", "md5$00$00", fast + "$x", "plain"):
        assert not verify_secret(password, broken)


# the credentials file ---------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_csv_and_yaml_are_private_files(db: Db, tmp_path: Path) -> None:
    prepared = prepare(db.registry, parse_csv("id,site\ngate-1,menin-gate\ngate-2,cloth-hall\n"))
    for name in ("out.csv", "out.yaml"):
        out = CredentialsFile(tmp_path / name)
        with out.writing(prepared.credentials) as publish:
            assert mode(tmp_path / name) == 0o600  # on disk before the commit
            publish()
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "id,password",
        *(f"{c.id},{c.password}" for c in prepared.credentials),
    ]
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == [
        {"id": c.id, "password": c.password} for c in prepared.credentials
    ]


def test_credentials_refuse_to_overwrite_unless_forced(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    os.chmod(out, 0o644)
    with pytest.raises(ValueError, match="exists: choose another name, or replace it"):
        CredentialsFile(out)
    with pytest.raises(ValueError, match="must end in"):
        CredentialsFile(tmp_path / "out.json")
    with pytest.raises(ValueError, match="is not a folder"):
        CredentialsFile(tmp_path / "missing" / "out.csv")
    prepared = prepare(db.registry, parse_csv("id,site\ngate-1,menin-gate\n"))
    forced = CredentialsFile(out, force=True)
    with forced.writing(prepared.credentials) as publish:
        assert out.read_text() == "old\n"  # replaced only after the commit
        publish()
    assert out.read_text().startswith("id,password\ngate-1,")
    assert mode(out) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]


@pytest.mark.parametrize("force", [False, True])
def test_a_failed_commit_leaves_no_credentials(db: Db, tmp_path: Path, force: bool) -> None:
    out = tmp_path / "out.csv"
    if force:
        out.write_text("old\n")
    prepared = prepare(db.registry, parse_csv("id,site\ngate-1,menin-gate\n"))
    add(db.registry, "gate-1", "menin-gate")
    with (
        pytest.raises(ImportRejected, match="already registered"),
        CredentialsFile(out, force=force).writing(prepared.credentials) as publish,
    ):
        commit(db.registry, prepared, NOW)
        publish()
    assert out.exists() is force
    if force:
        assert out.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]


def test_the_readme_examples_parse() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (csv_text,) = re.findall(r"^```csv\n(.*?)^```$", readme, re.S | re.M)
    (yaml_text,) = re.findall(r"^```yaml\n(.*?)^```$", readme, re.S | re.M)
    expected = [("menin-gate-ctl", "menin-gate"), ("atomium-ctl", "atomium")]
    for batch in (parse_csv(csv_text), parse_yaml(yaml_text)):
        assert batch.problems == ()
        assert [(r.entry.id, r.entry.site) for r in batch.rows] == expected
