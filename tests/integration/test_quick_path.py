"""The README's technician quick path, run as written: the commands of its block marked
`<!-- quick-path: ... -->`, read from README.md, as processes against a real
`illuminate serve` and a real Mosquitto with the dynamic-security plugin (the shipped
development config's set-up). Only the example addresses and the token are replaced by
this run's. The admin's "before" steps are done here with the CLI the README names.

Checks: at most five commands; the device is registered with its password in a new
file of mode 600; the agent command `devices register` prints is the README's; the test
flash is `applied`; health shows the device online; the broker refuses a wrong password
and the account under another client id, and admits the right one.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import controller
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    DYNSEC_ADMIN_PASSWORD,
    DYNSEC_ADMIN_USER,
    REPO,
    Mosquitto,
)
from tests.support.mqtt5 import can_connect

pytestmark = pytest.mark.broker

GENEROUS_S = 60.0
BIN = Path(sys.executable).parent
BELGIUM = Path(controller.__file__).parent / "demo" / "belgium.yaml"
MARK = "<!-- quick-path:"
EXAMPLE_URL = "https://illuminate.example.org"
EXAMPLE_BROKER = "mqtts://mqtt.example.org:8883"
EXAMPLE_TOKEN = "YOUR-TOKEN"
DEVICE = "menin-gate-ctl"
APPLIED = re.compile(
    rf"^{DEVICE}: applied in \d+ ms \(test plan v\d+\); back on its plan at \S+Z$", re.M
)


@dataclass(frozen=True)
class Block:
    commands: list[str]
    """The command lines, in order."""
    outputs: list[str]
    """The sample output lines (the comments), without their '# '."""


def readme_block() -> Block:
    """The fenced block after the quick-path mark in README.md."""
    text = (REPO / "README.md").read_text()
    assert text.count(MARK) == 1, "README.md must mark exactly one quick-path block"
    after = text[text.index(MARK) :].split("\n", 1)[1]
    assert after.startswith("```sh\n"), "the quick-path mark must precede a ```sh block"
    body = after[len("```sh\n") : after.index("\n```")]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return Block(
        commands=[line for line in lines if not line.startswith("#")],
        outputs=[line[2:] for line in lines if line.startswith("# ")],
    )


@dataclass
class Site:
    url: str
    broker: Mosquitto
    token: str
    workdir: Path
    env: dict[str, str]

    def localise(self, line: str) -> str:
        """A README line with this run's addresses and token."""
        return (
            line.replace(EXAMPLE_URL, self.url)
            .replace(EXAMPLE_BROKER, self.broker.url)
            .replace(EXAMPLE_TOKEN, self.token)
        )


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMINATE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return env


def _admin(config: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["illuminate", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=GENEROUS_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=GENEROUS_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=GENEROUS_S)


@pytest.fixture
def site(tmp_path: Path, dynsec_mosquitto: Mosquitto) -> Iterator[Site]:
    """The admin's set-up: sites, a technician for Ypres, `illuminate serve` (dynsec)."""
    from tests.support.mosquitto import free_port

    env = _clean_env(tmp_path)
    port = free_port()
    config = tmp_path / "illuminate.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[http]\nport = {port}\n"
        f'[broker]\nurl = "{dynsec_mosquitto.url}"\n'
        f'username = "{CONTROLLER_USER}"\npassword = "{CONTROLLER_PASSWORD}"\n'
        f'dynsec_admin_username = "{DYNSEC_ADMIN_USER}"\n'
        f'dynsec_admin_password = "{DYNSEC_ADMIN_PASSWORD}"\n'
    )
    _admin(config, env, "sites", "import", str(BELGIUM))
    added = _admin(config, env, "users", "add", "bob", "--role", "technician", "--city", "ypres")
    token = re.search(r"^API token: (\S+)$", added, re.M)
    assert token, added
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        ["illuminate", "serve", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=GENEROUS_S) as http:
            deadline = time.monotonic() + GENEROUS_S
            while True:
                assert serve.poll() is None, "illuminate serve exited"
                assert time.monotonic() < deadline, "illuminate serve did not become ready"
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        workdir = tmp_path / "technician"
        workdir.mkdir()
        yield Site(url, dynsec_mosquitto, token.group(1), workdir, env)
    finally:
        _stop(serve)
        log.close()


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + GENEROUS_S
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"exited: {path.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r}: {path.read_text(errors='replace')}"
        time.sleep(0.1)


def test_the_readme_quick_path_registers_and_flashes_a_device(site: Site) -> None:
    block = readme_block()
    assert len(block.commands) <= 5, block.commands
    assert any(APPLIED.match(line) for line in block.outputs), "README: no applied sample"
    env = dict(site.env)
    printed: list[str] = []
    background: list[subprocess.Popen[bytes]] = []
    agent_log = site.workdir / "agent.log"
    ran: list[str] = []
    try:
        for line in block.commands:
            line = site.localise(line)
            argv = shlex.split(line.removesuffix("&"))
            if argv[0] == "export":
                name, _, value = argv[1].partition("=")
                env[name] = value
            elif line.endswith("&"):
                assert argv[:2] == ["illuminate", "agent"], line
                with agent_log.open("wb") as out:
                    agent = subprocess.Popen(
                        argv, cwd=site.workdir, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                background.append(agent)
                # what the technician waits for before the test flash
                _wait_for(agent_log, f"device {DEVICE}: connected", agent)
            else:
                done = subprocess.run(
                    argv,
                    cwd=site.workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=GENEROUS_S,
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
                printed.append(done.stdout)
            ran.append(" ".join(argv[:3]))
        assert ran == [
            "export ILLUMINATE_TOKEN=" + site.token,
            "illuminate devices register",
            "illuminate agent --broker",
            "illuminate devices test",
            "illuminate devices health",
        ]
        registered, flashed, health = printed
        # the agent command `devices register` prints is the one the README runs
        told = re.search(r"^start it with: (.+)$", registered, re.M)
        assert told, registered
        agent_line = next(c for c in block.commands if c.endswith("&"))
        assert told.group(1) == site.localise(agent_line.removesuffix("&").strip())
        password_file = site.workdir / f"{DEVICE}.pw"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert password and password not in registered
        assert APPLIED.match(flashed.strip()), flashed
        assert re.search(r"^status     online ", health, re.M), health
    finally:
        for proc in background:
            _stop(proc)
    port = site.broker.port
    # the broker enforces the account the controller made
    assert not can_connect(port, DEVICE, password + "x", DEVICE, mqtt311=True)
    assert not can_connect(port, DEVICE, password, "someone-else", mqtt311=True)
    assert can_connect(port, DEVICE, password, DEVICE, mqtt311=True)
