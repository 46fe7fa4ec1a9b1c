"""What every `illuminate` subcommand that touches the database shares."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def adapter_config_json(value: str) -> dict[str, Any]:
    """`--adapter-config JSON`: a third-party device's adapter settings, a JSON object."""
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"topic": "wled/abc"}\'')
    return data


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
