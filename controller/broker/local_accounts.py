"""`DeviceAccounts` kept by the controller itself, for brokers that ask it: the embedded
broker, and a broker that delegates its decisions over HTTP (`controller/web/broker_hook.py`).

The accounts live in one SQLite file (by default `broker-accounts.sqlite` in the data
folder, owner-only), so every process on the machine sees the same ones: `illuminate serve` with its
embedded broker, and a command that registers devices meanwhile. Each row holds a salted
PBKDF2-SHA512 digest of the password (never the password), whether the account is enabled,
and a generation that every rotation and every disable increases.

The decisions are the ones `MemoryAccounts` makes, on the same rules (`device_acls`): a
device logs in only with its own id as username and as client id, reads only its own
`plan` and the controller status, and writes only its own `ack`, `state` and `status`
(a third-party controller: only its adapter's topics, kept with its account as its
`scope`; `scoped_acls`).
Its stamp (see `controller/broker/gate.py`) is its generation, so a rotation, a disable
or a delete closes the connections made before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Collection, Hashable, Iterator, Sequence
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path

from controller.broker.accounts import (
    AccountExists,
    AccountNotFound,
    Acl,
    AclType,
    Scope,
    account_acls,
    check_password,
    decide,
)
from devices.protocol import Topics, check_device_id, is_device_id

FILE_NAME = "broker-accounts.sqlite"
ITERATIONS = 1000
"""PBKDF2 rounds, as Mosquitto's dynamic-security plugin (101) and more: the passwords the
registry draws carry 192 random bits, which no rate of guessing reaches."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS accounts ("
    " device_id TEXT PRIMARY KEY,"
    " salt BLOB NOT NULL,"
    " digest BLOB NOT NULL,"
    " iterations INTEGER NOT NULL,"
    " enabled INTEGER NOT NULL DEFAULT 1,"
    " generation INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER)",
    "INSERT OR IGNORE INTO meta (id, revision) VALUES (0, 0)",
)
VENDOR_RECHECK_S = 1.0
"""How long the controller's view of the vendor topics may lag another process's change."""


def _digest(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


class LocalAccounts:
    """`DeviceAccounts` in a SQLite file, with the broker's decisions (`DeviceGate`)."""

    def __init__(self, path: Path, topics: Topics, *, timeout_s: float = 30.0) -> None:
        self.path = path
        self._topics = topics
        self._timeout = timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only from the start, with its journal files (SQLite gives them its mode)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(accounts)")}
            if "scope" not in columns:  # a file made before third-party devices
                db.execute("ALTER TABLE accounts ADD COLUMN scope TEXT")
        self._acls = lru_cache(maxsize=65536)(self._acls_of)
        self._vendor: tuple[float, frozenset[str]] = (-1e18, frozenset())

    @classmethod
    def in_folder(cls, data_dir: Path, topics: Topics) -> LocalAccounts:
        """The accounts of the controller whose data folder is `data_dir`."""
        return cls(data_dir / FILE_NAME, topics)

    # --- storage

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("UPDATE meta SET revision = revision + 1 WHERE id = 0")
            db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            yield db

    # --- DeviceAccounts

    def create(self, device_id: str, password: str, scope: Scope | None = None) -> None:
        check_device_id(device_id)
        check_password(password)
        salt = secrets.token_bytes(16)
        digest = _digest(password, salt, ITERATIONS)
        scoped = json.dumps(scope.as_json()) if scope is not None else None
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO accounts (device_id, salt, digest, iterations, scope)"
                    " VALUES (?,?,?,?,?)",
                    (device_id, salt, digest, ITERATIONS, scoped),
                )
            except sqlite3.IntegrityError:
                raise AccountExists(f"device account {device_id!r} already exists") from None
        self._acls.cache_clear()
        self._vendor = (-1e18, frozenset())

    def create_many(self, credentials: Sequence[tuple[str, str]]) -> None:
        """`create` for many devices (id, password) in one transaction: all or none.
        Raises `AccountExists` naming the first that is already there."""
        rows = []
        for device_id, password in credentials:
            check_device_id(device_id)
            check_password(password)
            salt = secrets.token_bytes(16)
            rows.append((device_id, salt, _digest(password, salt, ITERATIONS), ITERATIONS))
        with self._write() as db:
            for row in rows:
                try:
                    db.execute(
                        "INSERT INTO accounts (device_id, salt, digest, iterations)"
                        " VALUES (?,?,?,?)",
                        row,
                    )
                except sqlite3.IntegrityError:
                    raise AccountExists(f"device account {row[0]!r} already exists") from None

    def rotate(self, device_id: str, password: str) -> None:
        check_device_id(device_id)
        check_password(password)
        salt = secrets.token_bytes(16)
        digest = _digest(password, salt, ITERATIONS)
        with self._write() as db:
            changed = db.execute(
                "UPDATE accounts SET salt = ?, digest = ?, iterations = ?,"
                " generation = generation + 1 WHERE device_id = ?",
                (salt, digest, ITERATIONS, device_id),
            ).rowcount
            if not changed:
                raise AccountNotFound(f"no device account {device_id!r}")

    def disable(self, device_id: str) -> None:
        check_device_id(device_id)
        with self._write() as db:
            changed = db.execute(
                "UPDATE accounts SET enabled = 0, generation = generation + 1 WHERE device_id = ?",
                (device_id,),
            ).rowcount
            if not changed:
                raise AccountNotFound(f"no device account {device_id!r}")

    def delete(self, device_id: str) -> bool:
        check_device_id(device_id)
        with self._write() as db:
            return bool(
                db.execute("DELETE FROM accounts WHERE device_id = ?", (device_id,)).rowcount
            )

    def exists(self, device_id: str) -> bool:
        check_device_id(device_id)
        with self._read() as db:
            row = db.execute("SELECT 1 FROM accounts WHERE device_id = ?", (device_id,)).fetchone()
        return row is not None

    def reset(self) -> None:
        """Remove every account (`illuminate demo` starts from none)."""
        with self._write() as db:
            db.execute("DELETE FROM accounts")

    # --- the broker's decisions (DeviceGate)

    def admit(self, username: str, password: str, client_id: str) -> Hashable | None:
        if not is_device_id(username) or client_id != username or not password:
            return None
        with self._read() as db:
            row = db.execute(
                "SELECT salt, digest, iterations, enabled, generation FROM accounts"
                " WHERE device_id = ?",
                (username,),
            ).fetchone()
        if row is None:
            return None
        salt, digest, iterations, enabled, generation = row
        if not enabled or not hmac.compare_digest(digest, _digest(password, salt, iterations)):
            return None
        return int(generation)

    def login(self, username: str, password: str, client_id: str) -> bool:
        return self.admit(username, password, client_id) is not None

    def stamps(self, usernames: Collection[str]) -> dict[str, Hashable | None]:
        wanted = set(usernames)
        with self._read() as db:
            rows = db.execute("SELECT device_id, enabled, generation FROM accounts").fetchall()
        found = {d: int(g) for d, enabled, g in rows if enabled and d in wanted}
        return {u: found.get(u) for u in wanted}

    def revision(self) -> Hashable:
        with self._read() as db:
            (revision,) = db.execute("SELECT revision FROM meta WHERE id = 0").fetchone()
        return int(revision)

    def _acls_of(self, username: str) -> tuple[Acl, ...]:
        if not is_device_id(username):
            return ()
        scope = self._scope(username)
        return account_acls(self._topics, username, scope)

    def _scope(self, device_id: str) -> Scope | None:
        with self._read() as db:
            row = db.execute(
                "SELECT scope FROM accounts WHERE device_id = ?", (device_id,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return Scope.from_json(json.loads(row[0]))

    def vendor_topics(self) -> frozenset[str]:
        """Every topic of a third-party device's scope: the controller publishes to their
        command topics and subscribes to their report topics (`BrokerGate`)."""
        checked, found = self._vendor
        mono = time.monotonic()
        if mono - checked < VENDOR_RECHECK_S:
            return found
        with self._read() as db:
            rows = db.execute(
                "SELECT scope FROM accounts WHERE scope IS NOT NULL AND enabled = 1"
            ).fetchall()
        topics: set[str] = set()
        for (text,) in rows:
            scope = Scope.from_json(json.loads(text))
            if scope is not None:
                topics.update(scope.topics)
        self._vendor = (mono, frozenset(topics))
        return self._vendor[1]

    def may_publish(self, username: str, topic: str) -> bool:
        return decide(self._acls(username), AclType.PUBLISH_SEND, topic, default=False)

    def may_subscribe(self, username: str, topic_filter: str) -> bool:
        acls = self._acls(username)
        return decide(acls, AclType.SUBSCRIBE_LITERAL, topic_filter, default=False) or decide(
            acls, AclType.SUBSCRIBE_PATTERN, topic_filter, default=False
        )

    def may_receive(self, username: str, topic: str) -> bool:
        acls = self._acls(username)
        return bool(acls) and decide(acls, AclType.PUBLISH_RECEIVE, topic, default=True)
