"""What a device keeps across a reboot: the plan it holds and the highest version it took.

A `PlanStore` holds one `HeldPlan` for one device. `NativeDevice` saves it whenever the
version it holds or the step it last applied changes, and loads it once at boot, so a
rebooted device resumes its plan at once and never takes a version below the one it had,
whatever the broker kept retained.

Two stores:
- `FilePlanStore`: a small JSON file the device owns (mode 0600), replaced atomically
  (written to a temporary file in the same folder, fsynced, renamed over the old one,
  and the folder fsynced), so a crash at any point leaves either the old or the new file.
  A file that cannot be read or parsed is logged as an error and moved aside to
  `<name>.corrupt`; the device then starts empty. Failing to save is logged, never raised.
- `MemoryPlanStore`: the same contract in memory, for the fleet simulator (thousands of
  devices must not write a file per step) and for tests. It survives a "reboot" only
  as long as the object is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.protocol import DeviceId, Instant, Plan, check_device_id

log = logging.getLogger(__name__)

STATE_FORMAT: Literal[1] = 1
MAX_STATE_BYTES = 256 * 1024
"""A state file above this is refused as corrupt (a plan is at most 64 KiB on the wire)."""
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class HeldPlan:
    """What a device holds.

    - `version`: the highest plan version it has taken (applied, armed, or answered
      `rejected`/`expired`); any plan at or below it is refused.
    - `plan`: the plan it runs (None before any). It may be below `version` when a newer
      version was rejected or expired, since those do not replace the running plan.
    - `applied`: (version, step instant) of the last step applied to the fixture.
    """

    version: int
    plan: Plan | None = None
    applied: tuple[int, datetime] | None = None

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError("a held version is never negative")
        if self.plan is not None and self.plan.version > self.version:
            raise ValueError(
                f"the held plan {self.plan.version} is above the held version {self.version}"
            )


class PlanStore(Protocol):
    """Keeps one device's `HeldPlan`. Neither method raises: a fault is logged."""

    def load(self) -> HeldPlan | None:
        """The stored plan, or None when there is none (or it could not be read)."""
        ...

    def save(self, held: HeldPlan) -> None:
        """Store `held` in place of what was stored, all or nothing."""
        ...


class MemoryPlanStore:
    """A `PlanStore` in memory: kept as long as this object is."""

    def __init__(self, held: HeldPlan | None = None) -> None:
        self._held = held

    def load(self) -> HeldPlan | None:
        return self._held

    def save(self, held: HeldPlan) -> None:
        self._held = held


class _Applied(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: int = Field(ge=1, le=2**53)
    step_at: Instant


class _StateFile(BaseModel):
    """The file's body. `device` guards against a file copied from another device."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal[1] = STATE_FORMAT
    device: DeviceId
    version: int = Field(ge=0, le=2**53)
    plan: Plan | None = None
    applied: _Applied | None = None


def default_state_file(device_id: str, environ: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/illuminate/agent-<id>.json`, or under `~/.local/state`."""
    check_device_id(device_id)
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "illuminate" / f"agent-{device_id}.json"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, *, replace: Callable[[Path, Path], None] = os.replace
) -> None:
    """Write `data` to `path` all or nothing (mode 0600); raises OSError on failure.

    `replace` is the rename step, a seam for tests that crash between the write and it.
    """
    folder = path.parent
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    temp = folder / f".{path.name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a leftover temp file may have had other bits
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    replace(temp, path)
    _fsync_dir(folder)


class FilePlanStore:
    """A `PlanStore` in one JSON file, replaced atomically on every save."""

    def __init__(self, path: str | Path, device_id: str) -> None:
        self.path = Path(path)
        self.device_id = check_device_id(device_id)
        self.save_failures = 0
        """Saves that failed (each logged): the plan on the device outlives them in memory."""

    @property
    def corrupt_path(self) -> Path:
        return self.path.with_name(self.path.name + ".corrupt")

    def load(self) -> HeldPlan | None:
        try:
            with self.path.open("rb") as file:
                raw = file.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._set_aside(f"cannot read it: {exc.strerror or exc}")
            return None
        if len(raw) > MAX_STATE_BYTES:
            self._set_aside(f"it is over {MAX_STATE_BYTES} bytes")
            return None
        try:
            body = _StateFile.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            self._set_aside(f"{where}: {first['msg']}")
            return None
        if body.device != self.device_id:
            self._set_aside(f"it belongs to device {body.device!r}")
            return None
        try:
            return HeldPlan(
                version=body.version,
                plan=body.plan,
                applied=(body.applied.version, body.applied.step_at) if body.applied else None,
            )
        except ValueError as exc:
            self._set_aside(str(exc))
            return None

    def save(self, held: HeldPlan) -> None:
        body = _StateFile(
            device=self.device_id,
            version=held.version,
            plan=held.plan,
            applied=_Applied(version=held.applied[0], step_at=held.applied[1])
            if held.applied
            else None,
        )
        try:
            write_atomically(self.path, body.model_dump_json(exclude_none=True).encode())
        except OSError as exc:
            self.save_failures += 1
            log.error(
                "device %s: cannot store plan %d in %s: %s; a reboot would lose it",
                self.device_id,
                held.version,
                self.path,
                exc.strerror or exc,
            )

    def _set_aside(self, why: str) -> None:
        """Log a bad state file and move it to `.corrupt`, so the next boot starts clean."""
        aside = self.corrupt_path
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.error(
                "device %s: the state file %s is unusable (%s) and cannot be moved aside"
                " (%s); starting without a stored plan",
                self.device_id,
                self.path,
                why,
                exc.strerror or exc,
            )
            return
        with contextlib.suppress(OSError):
            _fsync_dir(self.path.parent)
        log.error(
            "device %s: the state file %s is unusable (%s); kept as %s, starting without"
            " a stored plan",
            self.device_id,
            self.path,
            why,
            aside,
        )
