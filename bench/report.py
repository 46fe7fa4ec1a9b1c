"""The run's header (machine and date), its rows, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.mosquitto import mosquitto_binary


def _meminfo_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


def _git_commit(repo: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    out = subprocess.run(
        [git, "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None


def header(devices: int, settings: dict[str, Any], repo: Path) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "devices": devices,
        "machine": {
            "cores": os.cpu_count(),
            "memory_mib": _meminfo_mib(),
            "python": platform.python_version(),
            "mosquitto": mosquitto_version(),
            "platform": platform.platform(),
        },
        "commit": _git_commit(repo),
        "settings": settings,
    }


def row(
    scenario: str,
    devices: int,
    seconds: float | None,
    floor_seconds: float | None,
    **extra: Any,
) -> dict[str, Any]:
    ratio = round(seconds / floor_seconds, 2) if seconds is not None and floor_seconds else None
    return {
        "scenario": scenario,
        "devices": devices,
        "seconds": None if seconds is None else round(seconds, 4),
        "floor_seconds": None if floor_seconds is None else round(floor_seconds, 4),
        "ratio": ratio,
        **extra,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _note(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


NOTE_KEYS = (
    "request_s",
    "from_request_s",
    "stored_s",
    "clients",
    "path",
    "rps",
    "floor_rps",
    "rps_share",
    "p99_ms",
    "floor_p99_ms",
    "p50_ms",
    "max_ms",
    "false_unconfirmed",
    "unconfirmed_commands",
    "unconfirmed_sites_max",
    "rss_mib",
    "hwm_mib",
    "floor_rss_mib",
    "kib_per_device",
    "marginal_kib_per_device",
    "per_device_ms",
    "done",
    "timed_out",
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'scenario':<22} {'devices':>7} {'seconds':>9} {'floor':>9} {'ratio':>7}  notes"]
    for r in rows:
        notes = ", ".join(f"{k}={_note(r[k])}" for k in NOTE_KEYS if r.get(k) is not None)
        lines.append(
            f"{r['scenario']:<22} {r['devices']:>7} {_fmt(r['seconds']):>9} "
            f"{_fmt(r['floor_seconds']):>9} {_fmt(r['ratio']):>7}  {notes}"
        )
    return "\n".join(lines)


def write(path: Path, head: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**head, "rows": rows}, indent=2) + "\n")
