"""Registering devices in bulk: file formats, checks, passwords and their hashes.

One core serves both ways in: `illuminate devices import FILE` and
`POST /api/v1/devices/import`.

1. Read: `load_file` (CSV or YAML, by extension) or `parse_request` (the API's JSON)
   gives a `Batch`: the rows that have the right shape, each with where it came from
   (`line 7`, `devices[6]`), and the problems found while reading.
2. `prepare` checks the rows against the registry (bad or reserved id, unknown site,
   already registered, repeated in the batch) and, when there is no problem at all,
   draws one password per device and hashes it. Any problem raises `ImportRejected`
   with every problem found, each naming its row and device id.
3. `commit` hands the devices to the store's `add_devices`: one transaction, all or
   nothing. The store runs the same checks again (`find_problems`) inside its
   transaction, so a change made meanwhile by someone else is still caught.

Password hashes (`verify_secret` reads both schemes):

- `sha256$<salt>$<digest>` for passwords the system draws itself (`new_password`: 24
  random bytes, 192 bits). A slow hash only helps against guessing a password that a
  person chose from a small space; nobody can guess a 192-bit random secret, at any
  speed, so a salted SHA-256 protects it as well as scrypt does, and 10,000 of them cost
  milliseconds instead of minutes.
- `scrypt$<salt>$<digest>` (n=2**14, r=8, p=1) for passwords an operator chooses
  (`illuminate devices add --password`): those may be guessable, so they keep the slow,
  memory-hard hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.broker.accounts import Scope
from controller.store.base import RESERVED_PREFIX, NewDevice, RegistryError
from devices.protocol import check_device_id
from schedules.files import Yaml12Loader
from schedules.model import SiteCatalog

MAX_REPORTED_PROBLEMS = 100
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_REQUEST_DEVICES = 10_000
PASSWORD_BYTES = 24
CSV_COLUMNS = ("id", "site")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
TOP = "(top)"


# passwords and hashes -----------------------------------------------------------


def new_password() -> str:
    """A fresh device password: 24 random bytes, URL-safe base64 (32 characters)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_chosen_secret(secret: str) -> str:
    """scrypt, for a password a person chose (it may be guessable: make guesses slow)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${salt.hex()}${digest.hex()}"


def hash_generated_secret(secret: str) -> str:
    """Salted SHA-256, for a password from `new_password` only.

    Its 192 random bits are what resist guessing, not the cost of the hash: a slow hash
    would add nothing, and would make registering 10,000 devices take minutes.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when `secret` matches a hash from either function above."""
    try:
        scheme, salt_hex, digest = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme == "scrypt":
        got = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
        return secrets.compare_digest(got.hex(), digest)
    if scheme == "sha256":
        return secrets.compare_digest(hashlib.sha256(salt + secret.encode()).hexdigest(), digest)
    return False


# the checks every store runs --------------------------------------------------------


class ProblemKind(StrEnum):
    INVALID = "invalid"
    """Wrong shape, wrong type, or an id that is not a device id."""
    RESERVED = "reserved"
    UNKNOWN_SITE = "unknown-site"
    REGISTERED = "registered"
    REPEATED = "repeated"


@dataclass(frozen=True)
class BatchProblem:
    """Why device number `index` of a batch cannot be registered."""

    index: int
    device_id: str
    kind: ProblemKind
    message: str
    first: int | None = None
    """For REPEATED: the index of the first device with this id."""


class BatchRejected(RegistryError):
    """A batch refused as a whole: `problems` lists every reason, device by device."""

    def __init__(self, problems: Sequence[BatchProblem]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0].message
        else:
            lines = [f"#{p.index}: {p.message}" for p in self.problems[:MAX_REPORTED_PROBLEMS]]
            if len(self.problems) > MAX_REPORTED_PROBLEMS:
                lines.append(f"and {len(self.problems) - MAX_REPORTED_PROBLEMS} more")
            text = f"{len(self.problems)} problems:\n" + "\n".join(lines)
        super().__init__(text)


def find_problems(
    devices: Sequence[NewDevice], known_sites: Collection[str], registered: Collection[str]
) -> list[BatchProblem]:
    """Every reason the batch cannot be registered, given the sites that exist and the
    ids (of this batch) already registered. Empty when it can be."""
    problems: list[BatchProblem] = []
    first_at: dict[str, int] = {}
    for index, device in enumerate(devices):
        did = device.id
        try:
            check_device_id(did)
        except ValueError as exc:
            problems.append(BatchProblem(index, did, ProblemKind.INVALID, str(exc)))
        else:
            if did.startswith(RESERVED_PREFIX):
                problems.append(
                    BatchProblem(
                        index,
                        did,
                        ProblemKind.RESERVED,
                        f"device ids starting with {RESERVED_PREFIX!r} are reserved: {did!r}",
                    )
                )
        if did in first_at:
            problems.append(
                BatchProblem(
                    index,
                    did,
                    ProblemKind.REPEATED,
                    f"device {did!r} is repeated",
                    first=first_at[did],
                )
            )
        else:
            first_at[did] = index
            if did in registered:
                problems.append(
                    BatchProblem(
                        index, did, ProblemKind.REGISTERED, f"device {did!r} is already registered"
                    )
                )
        if device.site_id not in known_sites:
            problems.append(
                BatchProblem(
                    index, did, ProblemKind.UNKNOWN_SITE, f"unknown site {device.site_id!r}"
                )
            )
    return problems


class _Knows(Protocol):
    def catalog(self) -> SiteCatalog: ...

    def device_ids(self) -> set[str]: ...


def check_batch(registry: _Knows, devices: Sequence[NewDevice]) -> None:
    """BatchRejected naming every problem of `devices` against the registry as it is."""
    sites = {site.id for site in registry.catalog().sites}
    registered = {d.id for d in devices} & registry.device_ids()
    problems = find_problems(devices, sites, registered)
    if problems:
        raise BatchRejected(problems)


# reading ------------------------------------------------------------------------------


class DeviceEntry(BaseModel):
    """One device to register, as a row of the CSV file, an item of the YAML file or of
    the API request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="device id, also its MQTT username")
    site: str = Field(min_length=1, description="the id of the site it lights")


class DeviceList(BaseModel):
    """The mapping form: `{"devices": [...]}` (YAML file and API request)."""

    model_config = ConfigDict(extra="forbid")

    devices: list[Any]


@dataclass(frozen=True)
class Problem:
    """One fault of an import: where it is (`line 7`, `devices[6]`), the device id when
    known, and the field at fault for a malformed row."""

    where: str
    message: str
    kind: ProblemKind = ProblemKind.INVALID
    device_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.where}: {self.message}"
        named = f"device {self.device_id!r}: " if self.device_id else ""
        return f"{self.where}: {named}{self.field}: {self.message}"


class ImportRejected(ValueError):
    """Nothing was registered; `problems` says why, all of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        shown = [f"  {p}" for p in self.problems[:MAX_REPORTED_PROBLEMS]]
        if len(self.problems) > MAX_REPORTED_PROBLEMS:
            shown.append(f"  and {len(self.problems) - MAX_REPORTED_PROBLEMS} more")
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''}:\n" + "\n".join(shown))

    @property
    def only_registered(self) -> bool:
        """True when the one fault is ids already registered (a conflict, not bad input)."""
        return all(p.kind is ProblemKind.REGISTERED for p in self.problems)


@dataclass(frozen=True)
class Row:
    where: str
    entry: DeviceEntry


@dataclass(frozen=True)
class Batch:
    """What a file or request holds: the well-formed rows and the faults found reading."""

    rows: tuple[Row, ...]
    problems: tuple[Problem, ...] = ()


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or TOP


def _entry(where: str, data: Any, rows: list[Row], problems: list[Problem]) -> None:
    try:
        rows.append(Row(where, DeviceEntry.model_validate(data)))
    except ValidationError as exc:
        did = data.get("id") if isinstance(data, dict) else None
        did = did if isinstance(did, str) and did else None
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(
                Problem(where, err["msg"], device_id=did, field=_field(loc) if loc else None)
            )


def parse_csv(text: str) -> Batch:
    """A header line `id,site` (in either order), then one device per line.

    Cells are stripped of surrounding spaces; blank lines are skipped. Any other column
    is an error, like a row with more or fewer cells than the header.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    problems: list[Problem] = []
    try:
        header = next(reader, None)
        if header is None:
            return Batch((), (Problem("line 1", "the file is empty; start it with 'id,site'"),))
        names = [cell.strip() for cell in header]
        for name in names:
            if name not in CSV_COLUMNS:
                problems.append(
                    Problem("line 1", f"unknown column {name!r}: the columns are id and site")
                )
        for name in CSV_COLUMNS:
            if names.count(name) != 1:
                how = "missing" if name not in names else "repeated"
                problems.append(Problem("line 1", f"column {name!r} is {how}"))
        if problems:
            return Batch((), tuple(problems))
        for record in reader:
            where = f"line {reader.line_num}"
            cells = [cell.strip() for cell in record]
            if not any(cells):
                continue
            if len(cells) != len(names):
                got = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
                problems.append(Problem(where, f"{got}, the header has {len(names)}"))
                continue
            _entry(where, dict(zip(names, cells, strict=True)), rows, problems)
    except csv.Error as exc:
        problems.append(Problem(f"line {reader.line_num}", f"not valid CSV: {exc}"))
    return Batch(tuple(rows), tuple(problems))


_Loader = Yaml12Loader


def parse_yaml(text: str) -> Batch:
    """A list of `{id, site}` mappings, or a mapping `{devices: [...]}` of them."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        return Batch((), (Problem(TOP, f"not valid YAML: {exc}"),))
    finally:
        loader.dispose()
    items = node
    if isinstance(data, dict):
        try:
            DeviceList.model_validate(data)
        except ValidationError as exc:
            return Batch(
                (),
                tuple(Problem(TOP, f"{_field(tuple(e['loc']))}: {e['msg']}") for e in exc.errors()),
            )
        data = data["devices"]
        items = next(v for k, v in node.value if k.value == "devices")
    if not isinstance(data, list) or not isinstance(items, yaml.SequenceNode):
        return Batch(
            (), (Problem(TOP, "expected a list of {id, site} or a mapping {devices: [...]}"),)
        )
    rows: list[Row] = []
    problems: list[Problem] = []
    for index, (item, item_node) in enumerate(zip(data, items.value, strict=True)):
        _entry(f"line {item_node.start_mark.line + 1} (item {index + 1})", item, rows, problems)
    return Batch(tuple(rows), tuple(problems))


def parse_request(data: Any, limit: int = MAX_REQUEST_DEVICES) -> Batch:
    """The API body: `{"devices": [{"id", "site"}, ...]}`, at most `limit` devices."""
    try:
        body = DeviceList.model_validate(data)
    except ValidationError as exc:
        return Batch((), tuple(Problem(_field(tuple(e["loc"])), e["msg"]) for e in exc.errors()))
    if len(body.devices) > limit:
        return Batch(
            (),
            (Problem("devices", f"at most {limit} devices per request, not {len(body.devices)}"),),
        )
    rows: list[Row] = []
    problems: list[Problem] = []
    for index, item in enumerate(body.devices):
        _entry(f"devices[{index}]", item, rows, problems)
    return Batch(tuple(rows), tuple(problems))


def file_format(path: Path) -> str:
    """'csv' or 'yaml', from the file name; ValueError for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".yaml", ".yml"}:
        return "yaml"
    raise ValueError(f"{path}: the name must end in .csv, .yaml or .yml")


def load_file(path: Path) -> Batch:
    """Read a devices file (CSV or YAML, by extension). OSError if it cannot be read."""
    kind = file_format(path)
    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        return Batch((), (Problem(TOP, f"{len(raw)} bytes is over {MAX_FILE_BYTES}"),))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Batch((), (Problem(TOP, f"not UTF-8 (byte {exc.start})"),))
    return parse_csv(text) if kind == "csv" else parse_yaml(text)


# registering --------------------------------------------------------------------------


class Registry(Protocol):
    """What registering needs of a store."""

    def catalog(self) -> SiteCatalog: ...

    def device_ids(self) -> set[str]: ...

    def add_devices(self, devices: Sequence[NewDevice], now: datetime) -> None: ...


@dataclass(frozen=True)
class Credential:
    id: str
    password: str
    scope: Scope | None = None
    """A third-party device's vendor topics (None: a native device)."""


@dataclass(frozen=True)
class Prepared:
    """A checked batch with its passwords drawn and hashed, not stored yet."""

    devices: tuple[NewDevice, ...]
    credentials: tuple[Credential, ...]
    wheres: tuple[str, ...]

    @property
    def sites(self) -> int:
        return len({d.site_id for d in self.devices})


def located(problems: Sequence[BatchProblem], wheres: Sequence[str]) -> list[Problem]:
    found = []
    for p in problems:
        message = p.message
        if p.first is not None:
            message += f" (first at {wheres[p.first]})"
        found.append(Problem(wheres[p.index], message, p.kind, p.device_id))
    return found


def prepare(
    registry: Registry, batch: Batch, progress: Callable[[str], None] | None = None
) -> Prepared:
    """Check the batch against the registry, then draw and hash the passwords.

    Raises ImportRejected with every problem (reading and checking) when there is any,
    or when the batch is empty.
    """
    say = progress or (lambda _message: None)
    wheres = tuple(row.where for row in batch.rows)
    candidates = [NewDevice(row.entry.id, row.entry.site) for row in batch.rows]
    sites = {site.id for site in registry.catalog().sites}
    ids = {d.id for d in candidates}
    registered = ids & registry.device_ids()
    problems = [*batch.problems, *located(find_problems(candidates, sites, registered), wheres)]
    if not problems and not candidates:
        problems.append(Problem(TOP, "no devices to register"))
    if problems:
        raise ImportRejected(problems)
    say(f"drawing and hashing {len(candidates)} passwords")
    credentials = tuple(Credential(d.id, new_password()) for d in candidates)
    devices = tuple(
        NewDevice(d.id, d.site_id, hash_generated_secret(c.password))
        for d, c in zip(candidates, credentials, strict=True)
    )
    return Prepared(devices, credentials, wheres)


def commit(registry: Registry, prepared: Prepared, now: datetime) -> None:
    """Store the batch in one transaction; ImportRejected (nothing stored) if the store
    finds a problem that appeared since `prepare`."""
    try:
        registry.add_devices(prepared.devices, now)
    except BatchRejected as exc:
        raise ImportRejected(located(exc.problems, prepared.wheres)) from None


def register(registry: Registry, batch: Batch, now: datetime) -> Prepared:
    """`prepare`, then `commit`: the batch is registered when this returns."""
    prepared = prepare(registry, batch)
    commit(registry, prepared, now)
    return prepared


# the credentials file -------------------------------------------------------------------


def render_credentials(credentials: Sequence[Credential], kind: str) -> str:
    """CSV (`id,password` header, one line per device) or YAML (a list of {id, password})."""
    if kind == "csv":
        lines = ["id,password", *(f"{c.id},{c.password}" for c in credentials)]
    else:
        lines = [
            f"- {{id: {json.dumps(c.id)}, password: {json.dumps(c.password)}}}" for c in credentials
        ]
    return "\n".join(lines) + "\n" if lines else ""


class CredentialsFile:
    """Where the passwords of an import go: a new file (mode 0600) or stdout (`-`).

    The constructor refuses, before anything is registered, a name of another format and
    an existing file (unless `force`). `writing` puts the passwords on disk before the
    caller stores the devices, so a registered device never lacks its password.
    """

    def __init__(self, path: Path, *, force: bool = False) -> None:
        self.path = path
        self.force = force
        self.to_stdout = str(path) == "-"
        self.kind = "csv" if self.to_stdout else file_format(path)
        self.name = "stdout" if self.to_stdout else str(path)
        if self.to_stdout:
            return
        if path.exists() and not force:
            raise ValueError(f"{path} exists: choose another name, or replace it with --force")
        if path.is_dir():
            raise ValueError(f"{path} is a folder")
        if not path.parent.is_dir():
            raise ValueError(f"{path.parent} is not a folder")

    @contextmanager
    def writing(self, credentials: Sequence[Credential]) -> Iterator[Callable[[], None]]:
        """Write the passwords, then run the block; the block calls the function it gets
        right after its commit. If the block fails before that, the file is removed."""
        text = render_credentials(credentials, self.kind)
        if self.to_stdout:

            def show() -> None:
                sys.stdout.write(text)
                sys.stdout.flush()

            yield show
            return
        if self.force:
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            written = Path(temp)
        else:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            written = self.path
        committed = False

        def publish() -> None:
            nonlocal committed
            committed = True
            if written != self.path:
                try:
                    os.replace(written, self.path)
                except OSError as exc:
                    raise ValueError(
                        f"the devices are registered, but their passwords stay in {written}: "
                        f"cannot rename it to {self.path}: {exc.strerror}"
                    ) from None

        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            yield publish
        finally:
            if not committed:
                written.unlink(missing_ok=True)
