"""`illuminate agent` and `illuminate simulate`: arguments, errors, and real runs."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.commands import PASSWORD_ENV, add_agent_parser, add_simulate_parser, build_parser
from devices.protocol import Stage
from tests.devices.harness import TestController, in_effect
from tests.support.mosquitto import REPO, Mosquitto


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def test_parsers_register_on_any_cli() -> None:
    parser = argparse.ArgumentParser(prog="illuminate")
    subparsers = parser.add_subparsers(dest="command")
    agent = add_agent_parser(subparsers)
    simulate = add_simulate_parser(subparsers)
    args = parser.parse_args(["agent", "--id", "dev-a", "--password", "pw"])
    assert callable(args.func) and args.broker == "mqtt://127.0.0.1:1883"
    assert args.topic_root == "illuminate/v1"
    args = parser.parse_args(["simulate", "--count", "5", "--offline", "2"])
    assert callable(args.func) and args.count == 5 and args.offline == 2
    assert "--password-file" in agent.format_help()
    assert "--state-file" in agent.format_help() and "--state-dir" in simulate.format_help()
    assert "--silent" in simulate.format_help() and "disjoint" in simulate.format_help()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "--id", "dev-a", "--password", "p", "--broker", "http://x"], "scheme"),
        (["agent", "--id", "dev-a", "--password", "p", "--broker", "mqtt://h:99999"], "port"),
        (["agent", "--id", "Dev_A", "--password", "p"], "invalid device id"),
        (["agent", "--id", "dev-a"], "password"),
        (["agent", "--id", "dev-a", "--password", ""], "empty"),
        (["agent", "--id", "dev-a", "--password-file", "/nonexistent/pw"], "cannot read"),
        (["agent", "--id", "dev-a", "--password", "p", "--topic-root", "a/#"], "topic root"),
        (
            ["agent", "--id", "dev-a", "--broker", "mqtt://other:pw@127.0.0.1:1883"],
            "device id",
        ),
        (["simulate", "--count", "3"], "password"),
        (["simulate", "--count", "3", "--password", "p", "--offline", "4"], "fleet has 3"),
        (["simulate", "--count", "3", "--password", "p", "--prefix", "BAD"], "prefix"),
        (["simulate", "--fleet", "/nonexistent/fleet.yaml"], "cannot read"),
        (["simulate", "--count", "0", "--password", "p"], "at least one"),
        (["agent", "--id", "dev-a", "--password", "p", "--state-file", "/"], "is a folder"),
        (
            ["agent", "--id", "dev-a", "--password", "p", "--state-file", "/dev/null/x/a.json"],
            "cannot create",
        ),
        (["simulate", "--count", "3", "--password", "p", "--state-dir", "/dev/null/x"], "cannot"),
    ],
)
def test_bad_arguments_give_a_clear_error(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith(f"illuminate {argv[0]}: error:")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--count", "3", "--fleet", "f.yaml"],
        ["simulate"],
        ["simulate", "--count", "-1"],
        ["simulate", "--count", "3", "--late-by", "soon"],
        ["simulate", "--count", "3", "--connect-rate", "0"],
        ["simulate", "--count", "3", "--connect-concurrency", "0"],
        ["agent", "--password", "p"],
        ["agent", "--id", "a", "--password", "p", "--password-file", "f"],
    ],
)
def test_argparse_refuses_bad_shapes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------- real runs


class Proc:
    """A command run in a child process, its output lines collected by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devices.commands", *argv],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in x for x in self.lines), timeout)

    def wait_count(self, text: str, count: int, timeout: float = 10.0) -> bool:
        """Wait until `count` lines contain `text`."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(text in x for x in self.lines) >= count, timeout)

    def interrupt(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


@pytest.mark.broker
def test_agent_command_runs_until_ctrl_c(
    mosquitto: Mosquitto, controller: TestController, procs: list[Proc], tmp_path: Path
) -> None:
    mosquitto.add_users({"cli-dev": "s3cret"})
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    state_home = tmp_path / "state"
    proc = Proc(
        ["agent", "--broker", mosquitto.url, "--id", "cli-dev", "--password-file", str(pw)],
        env={"XDG_STATE_HOME": str(state_home)},
    )
    procs.append(proc)
    assert controller.wait_status("cli-dev", online=True, timeout=15), proc.lines
    controller.send_plan("cli-dev", in_effect(1))
    assert controller.wait_ack("cli-dev", 1, Stage.APPLIED, timeout=10)
    assert proc.wait_line("applied: on #1E50FF at 80%")
    began = time.monotonic()
    assert proc.interrupt() == 0
    assert time.monotonic() - began < 5
    assert controller.wait_status("cli-dev", online=False)
    assert not any("Traceback" in line for line in proc.lines), proc.lines
    # the plan it held is in its own state file, under the user's state folder
    state_file = state_home / "illuminate" / "agent-cli-dev.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    assert b'"version":1' in state_file.read_bytes()


@pytest.mark.broker
def test_simulate_command_reports_progress_until_ctrl_c(
    mosquitto: Mosquitto, controller: TestController, procs: list[Proc]
) -> None:
    mosquitto.add_users({f"cli-{n:03d}": "fleet-pw" for n in range(1, 4)})
    proc = Proc(
        [
            "simulate",
            "--broker",
            mosquitto.url,
            "--count",
            "3",
            "--prefix",
            "cli-",
            "--silent",
            "1",
        ],
        env={PASSWORD_ENV: "fleet-pw"},
    )
    procs.append(proc)
    assert proc.wait_line("connected 3/3", timeout=15), proc.lines
    assert proc.lines[0].startswith("simulating 3 devices on mqtt://127.0.0.1:")
    assert "1 silent" in proc.lines[0]
    controller.send_plan("cli-002", in_effect(1))
    assert controller.wait_ack("cli-002", 1, Stage.APPLIED)
    assert proc.interrupt() == 0
    for n in range(1, 4):
        assert controller.wait_status(f"cli-{n:03d}", online=False)
    assert not any("Traceback" in line for line in proc.lines), proc.lines


@pytest.mark.broker
def test_simulate_command_says_why_devices_are_missing(
    mosquitto: Mosquitto, procs: list[Proc]
) -> None:
    mosquitto.add_users({"why-001": "fleet-pw", "why-002": "fleet-pw"})  # not why-003
    proc = Proc(
        ["simulate", "--broker", mosquitto.url, "--count", "3", "--prefix", "why-"],
        env={PASSWORD_ENV: "fleet-pw"},
    )
    procs.append(proc)
    # a line every few seconds while one is missing, each saying why
    assert proc.wait_line("connected 2/3; missing: 1 waiting to retry", timeout=30), proc.lines
    assert proc.wait_line("(1 connack refused: Not authorized)", timeout=30), proc.lines
    assert proc.wait_count("connected 2/3; missing", 3, timeout=30), proc.lines  # repeats
    mosquitto.add_users({"why-003": "fleet-pw"})
    assert proc.wait_line("connected 3/3 (all connected)", timeout=60), proc.lines
    assert proc.interrupt() == 0
    assert not any("Traceback" in line for line in proc.lines), proc.lines


def test_simulate_refuses_a_fleet_beyond_the_descriptor_limit() -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    done = subprocess.run(
        [sys.executable, "-m", "devices.commands", "simulate", "--count", "500"],
        cwd=REPO,
        env={**os.environ, PASSWORD_ENV: "pw"},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert done.returncode == 3
    assert "564 file descriptors are needed" in done.stderr
    assert "may open only 200" in done.stderr
    assert "Traceback" not in done.stderr
