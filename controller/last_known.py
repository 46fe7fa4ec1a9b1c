"""The last public status rendered, kept across restarts of the controller.

`PublicView` saves every language's document (its exact bytes and ETag) whenever a
build changes one, and once more when it stops, with `as_of`: the last time the
controller knew the documents to be current. At the next start, before its first build,
the view serves them as the *last-known* copy (see `controller/web/status_route.py`):
the page keeps answering while the controller restarts, and says how old what it shows
is.

`FileLastKnown` writes one JSON file in the data folder atomically (a temporary file,
flushed and renamed over the old one), so a crash mid-write leaves the previous copy.
A file that is missing, unreadable or not what this version writes is ignored (logged):
the view then starts as before, with 503 "starting" until its first build.
`MemoryLastKnown` is the in-memory double; tests/controller/test_last_known.py runs the
same contract on both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from devices.protocol import Instant

log = logging.getLogger(__name__)

FILE_NAME = "public-status.json"


@dataclass(frozen=True)
class Stored:
    """One language's document as it was served."""

    body: bytes
    etag: str
    generated_at: datetime


@dataclass(frozen=True)
class Saved:
    as_of: datetime
    documents: dict[str, Stored]


class LastKnown(Protocol):
    def load(self) -> Saved | None:
        """What was saved last, or None (nothing saved, or not readable)."""

    def save(self, saved: Saved) -> None:
        """Replace what is saved, all at once (raises OSError when it cannot)."""


class MemoryLastKnown:
    def __init__(self) -> None:
        self.saved: Saved | None = None
        self.saves = 0

    def load(self) -> Saved | None:
        return self.saved

    def save(self, saved: Saved) -> None:
        self.saved = saved
        self.saves += 1


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str
    etag: str
    generated_at: Instant


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int
    as_of: Instant
    documents: dict[str, _Document]


class FileLastKnown:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Saved | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the last-known public status %s: %s", self.path, exc)
            return None
        try:
            parsed = _File.model_validate_json(raw)
        except ValidationError as exc:
            log.warning(
                "ignoring the last-known public status %s: %d problem(s), first: %s",
                self.path,
                exc.error_count(),
                exc.errors()[0]["msg"],
            )
            return None
        if parsed.v != 1:
            log.warning("ignoring the last-known public status %s: version %d", self.path, parsed.v)
            return None
        return Saved(
            as_of=parsed.as_of,
            documents={
                lang: Stored(d.body.encode(), d.etag, d.generated_at)
                for lang, d in parsed.documents.items()
            },
        )

    def save(self, saved: Saved) -> None:
        content = _File(
            v=1,
            as_of=saved.as_of,
            documents={
                lang: _Document(body=d.body.decode(), etag=d.etag, generated_at=d.generated_at)
                for lang, d in saved.documents.items()
            },
        ).model_dump_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # the public status: nothing in it is private
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
