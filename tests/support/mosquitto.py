"""A private Mosquitto for one test run: free port, the project's own ACL, passwords.

The broker runs with `deploy/mosquitto/illuminate.acl` as its ACL and a password file
made for the accounts the test asks for, so tests meet the access rules production has.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto" / "illuminate.acl"
CONTROLLER_USER = "illuminate-controller"
CONTROLLER_PASSWORD = "controller-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    if Path("/usr/sbin/mosquitto").exists():
        return "/usr/sbin/mosquitto"
    raise RuntimeError(
        "the broker tests need Mosquitto: install the Debian package 'mosquitto' "
        "(make test does this when it may) and run again"
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port} within {timeout}s")


@dataclass
class Mosquitto:
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def _write_passwords(self) -> None:
        passwd = self.workdir / "passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        passwd.chmod(0o600)
        subprocess.run(
            [shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-U", str(passwd)],
            check=True,
            capture_output=True,
        )

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users.setdefault(CONTROLLER_USER, CONTROLLER_PASSWORD)
        self._write_passwords()
        self.port = self.port or free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous false",
                    "allow_zero_length_clientid false",
                    f"listener {self.port} 127.0.0.1",
                    f"password_file {self.workdir / 'passwd'}",
                    f"acl_file {ACL}",
                    # run as whoever runs the tests: as root, Mosquitto would switch
                    # to the 'mosquitto' user and lose access to this folder
                    f"user {getpass.getuser()}",
                    "max_packet_size 131072",
                    "persistence false",
                    "log_dest file " + str(self.workdir / "mosquitto.log"),
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)
        return self

    def add_users(self, users: dict[str, str]) -> None:
        """Add accounts and make the running broker reload its password file."""
        self.users.update(users)
        self._write_passwords()
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
