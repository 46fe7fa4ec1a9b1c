"""Staff users and API tokens: the store (`Users`), the migration, and `illuminate users`."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from controller.access import Action, grant
from controller.auth import Principal, Role
from controller.store.db import alembic_config, make_engine, migrate, session_factory
from controller.store.sql import sql_stores
from controller.store.tables import Base
from controller.store.users import TokenState, UserError, Users, expiry_from
from controller.users_cli import add_users_parser
from schedules.model import SiteCatalog

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [],
    }
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'illuminate.sqlite'}")
    migrate(engine)
    sql_stores(session_factory(engine)).registry.import_catalog(CATALOG)
    yield engine
    engine.dispose()


@pytest.fixture
def users(engine: Engine) -> Users:
    return Users(session_factory(engine))


# Users -----------------------------------------------------------------------------


def test_add_returns_a_token_that_authenticates(users: Users) -> None:
    token = users.add("bob", "technician", ["ypres", "brussels", "ypres"], NOW)
    assert token.startswith("ilm_") and len(token) > 40
    assert users.authenticate(token, NOW) == Principal(
        name="bob", role=Role.TECHNICIAN, cities=("ypres", "brussels")
    )
    coordinator = users.add("cora", "coordinator", [], NOW)
    principal = users.authenticate(coordinator, NOW)
    assert principal is not None and principal.role is Role.COORDINATOR
    assert principal.cities == ()


def test_city_scope(users: Users) -> None:
    tech = users.authenticate(users.add("tom", "technician", ["brussels"], NOW), NOW)
    admin = users.authenticate(users.add("ada", "admin", [], NOW), NOW)
    coordinator = users.authenticate(users.add("cora", "coordinator", [], NOW), NOW)
    assert tech is not None and admin is not None and coordinator is not None
    tech_sites = grant(tech, Action.EDIT_DEVICES)
    assert tech_sites is not None
    assert tech_sites.covers("brussels") and not tech_sites.covers("ypres")
    assert not tech_sites.covers(None)
    admin_sites = grant(admin, Action.EDIT_DEVICES)
    assert admin_sites is not None and admin_sites.covers("ypres")
    assert grant(coordinator, Action.EDIT_DEVICES) is None
    reading = grant(coordinator, Action.READ_SITES)
    assert reading is not None and reading.covers("brussels")


@pytest.mark.parametrize(
    ("name", "role", "cities", "words"),
    [
        ("alice", "wizard", [], "unknown role 'wizard' (choose one of: admin, coordinator"),
        ("alice", "technician", [], "a technician needs at least one city"),
        ("alice", "technician", ["atlantis"], "unknown city 'atlantis'"),
        ("alice", "technician", ["Brussels"], "not a valid city id"),
        ("alice", "coordinator", ["brussels"], "only technicians are scoped to cities"),
        ("Alice Smith", "admin", [], "not a valid user name"),
        ("", "admin", [], "not a valid user name"),
    ],
)
def test_bad_users_are_refused_with_a_reason(
    users: Users, name: str, role: str, cities: list[str], words: str
) -> None:
    with pytest.raises(UserError) as caught:
        users.add(name, role, cities, NOW)
    assert isinstance(caught.value, ValueError)  # so `illuminate` prints it and exits 2
    assert words in str(caught.value)
    assert users.list(NOW) == []


def test_names_are_unique(users: Users) -> None:
    users.add("cora", "coordinator", [], NOW)
    with pytest.raises(UserError, match="already exists"):
        users.add("cora", "admin", [], NOW)


def test_unknown_disabled_and_malformed_tokens_are_refused(users: Users) -> None:
    token = users.add("cora", "coordinator", [], NOW)
    for bad in ("", "ilm_", token[:-1], token + "x", "x" * 10_000, token.upper(), " " + token):
        assert users.authenticate(bad, NOW) is None
    users.disable("cora")
    assert users.authenticate(token, NOW) is None
    with pytest.raises(UserError, match="no user"):
        users.disable("nobody")


def test_issue_token_adds_a_token_and_keeps_the_others(users: Users) -> None:
    first = users.add("cora", "coordinator", [], NOW)
    second = users.issue_token("cora", NOW)
    assert second != first
    assert users.authenticate(first, NOW) == users.authenticate(second, NOW)
    (view,) = users.list(NOW)
    assert view.tokens == 2
    with pytest.raises(UserError, match="no user 'nobody'"):
        users.issue_token("nobody", NOW)


def test_last_use_is_recorded_at_most_once_a_minute(users: Users) -> None:
    token = users.add("cora", "coordinator", [], NOW)
    assert users.list(NOW)[0].last_used_at is None
    users.authenticate(token, NOW, record_use=False)
    assert users.list(NOW)[0].last_used_at is None
    users.authenticate(token, NOW)
    assert users.list(NOW)[0].last_used_at == NOW
    users.authenticate(token, NOW + timedelta(seconds=30))
    assert users.list(NOW)[0].last_used_at == NOW
    users.authenticate(token, NOW + timedelta(minutes=2))
    assert users.list(NOW)[0].last_used_at == NOW + timedelta(minutes=2)


# expiry and revocation --------------------------------------------------------------


def test_an_expired_token_is_refused_from_its_expiry_on(users: Users) -> None:
    token = users.add("cora", "coordinator", [], NOW, expires_at=NOW + timedelta(hours=1))
    assert users.authenticate(token, NOW + timedelta(minutes=59)) is not None
    assert users.authenticate(token, NOW + timedelta(hours=1)) is None
    (view,) = users.list(NOW + timedelta(hours=1))
    assert view.tokens == 0
    (listed,) = users.tokens("cora", NOW + timedelta(hours=2))
    assert listed.state is TokenState.EXPIRED
    assert listed.expires_at == NOW + timedelta(hours=1)
    assert listed.hint is not None and token.startswith(listed.hint) and len(listed.hint) == 12


def test_an_expiry_in_the_past_is_refused(users: Users) -> None:
    with pytest.raises(UserError, match="not in the future"):
        users.add("cora", "coordinator", [], NOW, expires_at=NOW)
    users.add("cora", "coordinator", [], NOW)
    with pytest.raises(UserError, match="not in the future"):
        users.issue_token("cora", NOW, expires_at=NOW - timedelta(days=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW + timedelta(minutes=30)),
        ("12h", NOW + timedelta(hours=12)),
        ("90d", NOW + timedelta(days=90)),
        ("2w", NOW + timedelta(weeks=2)),
        ("2027-01-31", datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-01-31T18:00+01:00", datetime(2027, 1, 31, 17, tzinfo=UTC)),
        ("2027-01-31T18:00Z", datetime(2027, 1, 31, 18, tzinfo=UTC)),
    ],
)
def test_expiry_forms(text: str, expected: datetime) -> None:
    assert expiry_from(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0d", "longer than zero"),
        ("soon", "use a duration (30m, 12h, 90d, 2w), a date"),
        ("5y", "use a duration"),
        ("2027-01-31T18:00", "give the instant's offset"),
        ("2026-07-30", "is not in the future"),
        ("2020-01-01T00:00Z", "is not in the future"),
    ],
)
def test_bad_expiries_say_what_to_write(text: str, words: str) -> None:
    with pytest.raises(UserError, match=re.escape(words)):
        expiry_from(text, NOW)


def test_revoke_one_token_by_id_or_hint_or_all(users: Users) -> None:
    first = users.add("bob", "technician", ["ypres"], NOW)
    second = users.issue_token("bob", NOW)
    third = users.issue_token("bob", NOW)
    other = users.add("cora", "coordinator", [], NOW)
    ids = [t.id for t in users.tokens("bob", NOW)]

    assert users.revoke("bob", str(ids[0]), NOW) == 1
    assert users.authenticate(first, NOW) is None
    assert users.authenticate(second, NOW) is not None
    assert users.revoke("bob", second[:12], NOW) == 1
    assert users.authenticate(second, NOW) is None
    assert users.authenticate(third, NOW) is not None
    states = [t.state for t in users.tokens("bob", NOW)]
    assert states == [TokenState.REVOKED, TokenState.REVOKED, TokenState.ACTIVE]
    assert users.tokens("bob", NOW)[0].revoked_at == NOW

    with pytest.raises(UserError, match="already revoked"):
        users.revoke("bob", str(ids[0]), NOW)
    cora_id = users.tokens("cora", NOW)[0].id
    with pytest.raises(UserError, match="has no token"):
        users.revoke("bob", str(cora_id), NOW)  # another user's token is not theirs
    with pytest.raises(UserError, match="names no token"):
        users.revoke("bob", "latest", NOW)
    with pytest.raises(UserError, match="no user 'nobody'"):
        users.revoke("nobody", None, NOW)

    assert users.revoke("bob", None, NOW) == 1
    assert users.authenticate(third, NOW) is None
    assert users.authenticate(other, NOW) is not None
    assert [v.tokens for v in users.list(NOW)] == [0, 1]


# migration -------------------------------------------------------------------------


def test_migration_0002_matches_the_tables_and_goes_down_and_up(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [d for d in diff if any(t in repr(d) for t in ("users", "api_tokens", "audit_log"))]
    assert mine == []

    cfg = alembic_config(str(engine.url))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    assert not {"users", "api_tokens"} & tables
    assert "campaigns" in tables
    migrate(engine)
    with engine.connect() as conn:
        assert {"users", "api_tokens"} <= set(inspect(conn).get_table_names())


# command line ----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Path:
    """A settings file whose database is the `engine` fixture's (cities imported)."""
    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "illuminate.toml"
    path.write_text(f'data_dir = "{(tmp_path / "data").as_posix()}"\n')
    return path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="illuminate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_users_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def printed_token(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("API token: ")]
    return line.removeprefix("API token: ")


def test_users_add_prints_a_working_token_once(
    config: Path, users: Users, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["users", "add", "bob", "--role", "technician", "--city", "brussels"]
    assert run(*argv, "--city", "ypres", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "created user bob (technician for brussels, ypres)" in out
    assert "shown once" in out
    token = printed_token(out)
    assert out.count(token) == 1
    assert users.authenticate(token, NOW) == Principal(
        name="bob", role=Role.TECHNICIAN, cities=("brussels", "ypres")
    )

    assert run("users", "token", "bob", "--config", str(config)) == 0
    second = printed_token(capsys.readouterr().out)
    assert users.authenticate(second, NOW) is not None and second != token

    assert run("users", "add", "cora", "--role", "coordinator", "--config", str(config)) == 0
    capsys.readouterr()
    assert run("users", "list", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    assert "bob" in listing and "brussels,ypres" in listing and "tokens=2" in listing
    assert "cora" in listing and "coordinator" in listing
    assert "2 users" in listing
    assert token not in listing and second not in listing

    assert run("users", "disable", "bob", "--config", str(config)) == 0
    assert "disabled user bob" in capsys.readouterr().out
    assert users.authenticate(token, NOW) is None and users.authenticate(second, NOW) is None
    with pytest.raises(ValueError, match="no user 'nobody'"):
        run("users", "disable", "nobody", "--config", str(config))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--role", "wizard"], "unknown role 'wizard'"),
        (["--role", "technician"], "a technician needs at least one city"),
        (["--role", "technician", "--city", "atlantis"], "unknown city 'atlantis'"),
        (["--role", "admin", "--city", "ypres"], "only technicians"),
    ],
)
def test_users_add_refuses_with_a_clear_value_error(
    config: Path, users: Users, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=words):
        run("users", "add", "alice", *argv, "--config", str(config))
    assert "API token" not in capsys.readouterr().out
    assert users.list(NOW) == []


def test_users_revoke_and_expiry_on_the_command_line(
    config: Path, users: Users, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run("users", "add", "bob", "--role", "admin", "--expires", "90d", "--config", str(config))
        == 0
    )
    out = capsys.readouterr().out
    first = printed_token(out)
    (expiry,) = [line for line in out.splitlines() if line.startswith("expires: ")]
    assert expiry != "expires: never"
    assert run("users", "token", "bob", "--config", str(config)) == 0
    second = printed_token(capsys.readouterr().out)

    assert run("users", "tokens", "bob", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    assert first[:12] in listing and second[:12] in listing and "2 tokens of bob" in listing
    assert first not in listing and second not in listing
    assert run("users", "revoke", "bob", "--token", first[:12], "--config", str(config)) == 0
    assert "revoked token" in capsys.readouterr().out
    now = datetime.now(UTC)
    assert users.authenticate(first, now) is None
    assert users.authenticate(second, now) is not None
    assert run("users", "tokens", "bob", "--config", str(config)) == 0
    assert "revoked" in capsys.readouterr().out

    assert run("users", "revoke", "bob", "--all", "--config", str(config)) == 0
    assert "revoked 1 tokens of bob" in capsys.readouterr().out
    assert users.authenticate(second, now) is None
    with pytest.raises(ValueError, match="give the instant's offset"):
        run("users", "token", "bob", "--expires", "2099-01-01T00:00", "--config", str(config))
    with pytest.raises(SystemExit):
        run("users", "revoke", "bob", "--config", str(config))  # --token or --all
    assert "--token" in capsys.readouterr().err


def test_every_users_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("add", "token", "tokens", "revoke", "disable", "list"):
        with pytest.raises(SystemExit):
            run("users", action, "--help")
        text = capsys.readouterr().out
        assert "--config" in text
        assert len(text.split("\n\n")[1].strip()) > 30, action  # a description
    run_help = capsys.readouterr()
    assert run_help.err == ""


def test_users_add_needs_a_role(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("users", "add", "alice", "--config", str(config))
    assert exited.value.code == 2
    assert "--role" in capsys.readouterr().err
