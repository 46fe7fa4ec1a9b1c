"""What every `illuminate` subcommand that touches the database shares."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from controller.settings import load_settings
from controller.store.db import make_engine, migrate, session_factory


class CliError(Exception):
    """A fault the user can fix; printed without a traceback."""


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (TOML); ILLUMINATE_* environment variables override it",
    )


@contextmanager
def open_database(args: argparse.Namespace) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, migrated to the newest schema."""
    settings = load_settings(getattr(args, "config", None))
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()
