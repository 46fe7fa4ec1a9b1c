"""The SQL stores on throw-away databases, and what tests read below the store seams.

No store returns a device's secret hash (only the broker's password file needs it), so
`secret_hash` reads the row itself, to check what the registry keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.store.base import Stores
from controller.store.sql import database
from controller.store.tables import DeviceRow
from tests.support.databases import postgres_database

SQL_KINDS = ("sqlite", "postgresql")

Database = tuple[Engine, sessionmaker[Session], Stores]


@contextmanager
def sql_database(kind: str, folder: Path) -> Iterator[Database]:
    """A migrated database with its engine, sessions and stores: `sqlite` (a file in
    `folder`) or `postgresql` (a fresh database, dropped afterwards)."""
    if kind == "sqlite":
        with database(f"sqlite:///{folder / 'illuminate.sqlite'}") as found:
            yield found
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    with postgres_database() as url, database(url) as found:
        yield found


@contextmanager
def data_dir_database(data_dir: Path) -> Iterator[Database]:
    """The database `illuminate` uses by default in `data_dir` (its SQLite file)."""
    with sql_database("sqlite", data_dir) as found:
        yield found


def secret_hash(sessions: sessionmaker[Session], device_id: str) -> str | None:
    """The secret hash the registry keeps for a device; KeyError if it is not registered."""
    with sessions() as s:
        row = s.get(DeviceRow, device_id)
        if row is None:
            raise KeyError(device_id)
        return row.secret_hash


def device_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(DeviceRow)) or 0)
