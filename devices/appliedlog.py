"""A record of every step a simulated fleet applied: one JSON line per application.

`illuminate simulate --applied-log FILE` appends to FILE, for each step a device sets
on its fixture, `{"device", "version", "step_at", "applied_at", "state"}`. The line is
written (and flushed to the operating system) when the output is set, before the ack
that tells of it, so a killed simulator loses no line of a step it acknowledged. A step
shown again after a restart from the device's stored plan is not an application and is
not written. Reading the file back (`read_applied`) is how a test learns, per device,
every version it applied and in which order.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from devices.protocol import LightState, format_instant


@dataclass(frozen=True)
class AppliedStep:
    device: str
    version: int
    step_at: datetime
    applied_at: datetime
    state: LightState


class AppliedLog:
    """Appends one line per applied step to a file; safe from any thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(
        self,
        device: str,
        version: int,
        step_at: datetime,
        applied_at: datetime,
        state: LightState,
    ) -> None:
        line = json.dumps(
            {
                "device": device,
                "version": version,
                "step_at": format_instant(step_at),
                "applied_at": format_instant(applied_at),
                "state": state.model_dump(mode="json", exclude_none=True),
            },
            separators=(",", ":"),
        )
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_applied(path: str | Path) -> list[AppliedStep]:
    """The lines of an applied log, in the order they were written. A last line cut
    short (the process was killed while writing it) is left out."""
    out: list[AppliedStep] = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            continue
        out.append(
            AppliedStep(
                device=body["device"],
                version=int(body["version"]),
                step_at=datetime.fromisoformat(body["step_at"]),
                applied_at=datetime.fromisoformat(body["applied_at"]),
                state=LightState.model_validate(body["state"]),
            )
        )
    return out
