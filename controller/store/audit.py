"""The audit log: who did what through the staff API, and when (UTC). Append-only.

`AuditLog` is the seam; `SqlAuditLog` keeps the entries in the `audit_log` table (whose
rows the database itself refuses to update or delete), `MemoryAuditLog` in a list.
`tests/controller/test_audit.py` runs one contract on SQLite, PostgreSQL and memory.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from controller.access import AuditKind
from controller.store.tables import AuditRow

MAX_PAGE = 500


@dataclass(frozen=True)
class AuditRecord:
    """One thing done: `actor` (a user name) did `action` to `subject` (of `kind`)."""

    at: datetime
    actor: str
    kind: AuditKind
    action: str
    subject: str | None = None
    city: str | None = None
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("an audit record needs an aware instant")


@dataclass(frozen=True)
class AuditEntry:
    """A stored record, with its place in the log (`id` grows with every append)."""

    id: int
    record: AuditRecord


class AuditLog(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Store the records, in one transaction, in order; the entries as stored."""

    def entries(
        self,
        kinds: Collection[AuditKind] | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first: up to `limit` entries of `kinds` (None: every kind) whose id is
        below `before` (None: from the newest)."""


def _page(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return min(limit, MAX_PAGE)


class SqlAuditLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        with self.sessions.begin() as s:
            return write_records(s, records)

    def entries(
        self,
        kinds: Collection[AuditKind] | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(_page(limit))
        if kinds is not None:
            query = query.where(AuditRow.kind.in_([k.value for k in kinds]))
        if before is not None:
            query = query.where(AuditRow.id < before)
        with self.sessions() as s:
            return [_entry(row) for row in s.scalars(query)]


def write_records(s: Session, records: Sequence[AuditRecord]) -> list[AuditEntry]:
    """Insert the records in the caller's transaction (so that a change and its entry
    commit, or roll back, together); the entries as they will be stored."""
    if not records:
        return []
    rows = [
        {
            "at": r.at,
            "actor": r.actor,
            "kind": r.kind.value,
            "action": r.action,
            "subject": r.subject,
            "city": r.city,
            "detail": r.detail,
        }
        for r in records
    ]
    ids = list(
        s.scalars(insert(AuditRow).returning(AuditRow.id, sort_by_parameter_order=True), rows)
    )
    return [AuditEntry(i, _utc(r)) for i, r in zip(ids, records, strict=True)]


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        row.id,
        AuditRecord(
            at=row.at,
            actor=row.actor,
            kind=AuditKind(row.kind),
            action=row.action,
            subject=row.subject,
            city=row.city,
            detail=row.detail,
        ),
    )


def _utc(record: AuditRecord) -> AuditRecord:
    return replace(record, at=record.at.astimezone(UTC))


@dataclass
class MemoryAuditLog:
    _entries: list[AuditEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        with self._lock:
            start = len(self._entries) + 1
            added = [AuditEntry(start + n, _utc(r)) for n, r in enumerate(records)]
            self._entries.extend(added)
        return added

    def entries(
        self,
        kinds: Collection[AuditKind] | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        page = _page(limit)
        wanted = None if kinds is None else frozenset(kinds)
        found = []
        with self._lock:
            for entry in reversed(self._entries):
                if before is not None and entry.id >= before:
                    continue
                if wanted is not None and entry.record.kind not in wanted:
                    continue
                found.append(entry)
                if len(found) == page:
                    break
        return found
