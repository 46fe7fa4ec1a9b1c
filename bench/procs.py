"""Child processes of a bench run, stopped on every exit path, and their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType


class BenchAborted(Exception):
    """The run was stopped (SIGTERM) or could not go on."""


class Children:
    """Every subprocess the run starts; `stop_all` ends them, newest first."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv`; its stderr goes to `log`; stdout lines go to `on_line` (or the log)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        err = log.open("ab")
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_line else err,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
        err.close()
        with self._lock:
            self._procs.append((name, proc))
        if on_line is not None:
            assert proc.stdout is not None
            threading.Thread(
                target=_pump, args=(proc.stdout, on_line), name=f"{name}-stdout", daemon=True
            ).start()
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with self._lock:
            self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        # ask everyone at once, then wait: a fleet of shards stops in parallel
        for _name, proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for _name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with self._lock:
            self._procs.clear()

    def check_alive(self) -> None:
        """Raise BenchAborted when a child died before its time."""
        with self._lock:
            procs = list(self._procs)
        for name, proc in procs:
            if proc.poll() is not None:
                raise BenchAborted(f"{name} exited with code {proc.returncode}")


def _pump(stream: object, on_line: Callable[[str], None]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        on_line(raw.decode(errors="replace").rstrip("\n"))


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc; (0, 0) when it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values["VmRSS"], values["VmHWM"]


def stop_on_signals() -> None:
    """Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited ignored (a
    background job), and SIGTERM raises BenchAborted: the run's clean-up runs either way."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise BenchAborted("stopped by SIGTERM")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handle)
