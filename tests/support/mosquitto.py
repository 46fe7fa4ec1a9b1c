"""A private Mosquitto for one test run: free port, the test rig's ACL, passwords.

By default the broker runs with a password file made for the accounts the test asks
for and the test rig's ACL, `tests/support/test-rig.acl`: hashing a handful of
accounts into a file is much faster than provisioning each through the
dynamic-security plugin. Mosquitto warns at its start about that ACL's controller-status
`pattern` line (no %u), which is why the shipped configs use the plugin instead.

With `dynsec=True` it runs the dynamic-security plugin instead of the password file
and the ACL, as the shipped `deploy/mosquitto/dev.conf` and `production.conf` do: the
plugin's file is made by `mosquitto_ctrl dynsec init` with the admin
`DYNSEC_ADMIN_USER`, and the controller's account is made with the `mosquitto_ctrl`
commands deploy/mosquitto/README.md gives. Devices are then provisioned through
`controller.broker.dynsec.DynsecAccounts` (or the controller's registrar).

Either way it has the delivery limits of `deploy/mosquitto/dev.conf` (`SHIPPED_LIMITS`,
read from that file), so tests meet the rules production has. Its file-descriptor limit
is raised to the hard limit, for tests with many clients. `persistence=True` keeps
sessions and retained messages in the work folder across `restart()`; without it a
restart forgets everything, as a broker that crashed would. `kill()` ends the broker
with SIGKILL (no last save); `start(write_passwords=False)` brings it back on the same
port with what its last autosave kept (`wait_autosave`).
"""

from __future__ import annotations

import getpass
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devices.connection import BrokerAddress

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "tests" / "support" / "test-rig.acl"
"""The test rig's ACL (with a password file): not shipped, see its header."""
DEV_CONF = REPO / "deploy" / "mosquitto" / "dev.conf"
PRODUCTION_CONF = REPO / "deploy" / "mosquitto" / "production.conf"
SHIPPED_CONFS = tuple(sorted((REPO / "deploy" / "mosquitto").glob("*.conf")))
"""Every Mosquitto config the project ships."""
#: the settings that bound delivery; the test broker takes them from the shipped config
LIMIT_KEYS = (
    "max_packet_size",
    "max_inflight_messages",
    "max_inflight_bytes",
    "max_queued_messages",
    "max_queued_bytes",
    "max_connections",
    "max_keepalive",
    "message_size_limit",
    "queue_qos0_messages",
    "persistent_client_expiration",
)
CONTROLLER_USER = "illuminate-controller"
CONTROLLER_PASSWORD = "controller-secret"
DYNSEC_ADMIN_USER = "illuminate-admin"
DYNSEC_ADMIN_PASSWORD = "dynsec-admin-secret"
DYNSEC_PLUGIN_NAME = "mosquitto_dynamic_security.so"
TOPIC_ROOT = "illuminate/v1"


def dynsec_plugin() -> Path:
    """Where the dynamic-security plugin is (Debian: /usr/lib/<triplet>/)."""
    for folder in (*Path("/usr/lib").glob("*-linux-gnu"), Path("/usr/lib"), Path("/usr/local/lib")):
        candidate = folder / DYNSEC_PLUGIN_NAME
        if candidate.exists():
            return candidate
    raise RuntimeError(
        f"the dynsec tests need {DYNSEC_PLUGIN_NAME}: install the Debian package "
        "'mosquitto' 2.0 or later and run again"
    )


def controller_setup_commands(password: str, user: str = CONTROLLER_USER) -> list[list[str]]:
    """The `mosquitto_ctrl dynsec` arguments that give the controller its account:
    bound to its client id, reading and writing the whole topic tree."""
    return [
        ["createClient", user, "-c", user, "-p", password],
        ["createRole", user],
        ["addRoleACL", user, "publishClientSend", f"{TOPIC_ROOT}/#", "allow"],
        ["addRoleACL", user, "subscribePattern", f"{TOPIC_ROOT}/#", "allow"],
        ["addClientRole", user, user],
    ]


def config_limits(path: Path) -> dict[str, str]:
    """The `LIMIT_KEYS` settings a Mosquitto config file sets, by name."""
    limits: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key in LIMIT_KEYS:
            limits[key] = value.strip()
    return limits


SHIPPED_LIMITS = config_limits(DEV_CONF)


def _raise_nofile() -> None:
    """In the broker's process, before exec: as many file descriptors as allowed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    persistence: bool = False
    limits: dict[str, str] = field(default_factory=lambda: dict(SHIPPED_LIMITS))
    dynsec: bool = False
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

    @property
    def dynsec_file(self) -> Path:
        return self.workdir / "dynamic-security.json"

    def start(self, *, write_passwords: bool = True) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users.setdefault(CONTROLLER_USER, CONTROLLER_PASSWORD)
        fresh_dynsec = self.dynsec and not self.dynsec_file.exists()
        if self.dynsec:
            if set(self.users) != {CONTROLLER_USER}:
                raise ValueError("with dynsec, provision devices through DynsecAccounts")
            if fresh_dynsec:
                init = ["dynsec", "init", str(self.dynsec_file)]
                self._ctrl([*init, DYNSEC_ADMIN_USER, DYNSEC_ADMIN_PASSWORD], connect=False)
        elif write_passwords or not (self.workdir / "passwd").exists():
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
                    *self._auth_lines(),
                    # run as whoever runs the tests: as root, Mosquitto would switch
                    # to the 'mosquitto' user and lose access to this folder
                    f"user {getpass.getuser()}",
                    *(f"{key} {value}" for key, value in self.limits.items()),
                    *self._persistence_lines(),
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
            preexec_fn=_raise_nofile,
        )
        _wait_port(self.port, self.proc)
        if fresh_dynsec:
            for command in controller_setup_commands(self.users[CONTROLLER_USER]):
                self._ctrl(["dynsec", *command])
        return self

    def _auth_lines(self) -> list[str]:
        if self.dynsec:
            return [f"plugin {dynsec_plugin()}", f"plugin_opt_config_file {self.dynsec_file}"]
        return [f"password_file {self.workdir / 'passwd'}", f"acl_file {ACL}"]

    def _ctrl(self, args: list[str], *, connect: bool = True) -> None:
        """Run `mosquitto_ctrl` (as the dynsec admin, against this broker)."""
        binary = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"
        # -i: mosquitto_ctrl sends an empty client id otherwise, which a broker with
        # allow_zero_length_clientid false refuses; and it exits 0 even then
        login = ["-h", "127.0.0.1", "-p", str(self.port), "-i", "illuminate-setup"]
        login += ["-u", DYNSEC_ADMIN_USER, "-P", DYNSEC_ADMIN_PASSWORD]
        done = subprocess.run(
            [binary, *(login if connect else []), *args], capture_output=True, timeout=30
        )
        out = (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode != 0 or "error" in out.lower():
            raise RuntimeError(f"mosquitto_ctrl {args[:2]} failed: {out.strip()}")

    @property
    def admin_address(self) -> BrokerAddress:
        """The dynsec admin's address, for `DynsecAccounts`."""
        return BrokerAddress(
            "127.0.0.1", self.port, False, DYNSEC_ADMIN_USER, DYNSEC_ADMIN_PASSWORD
        )

    def _persistence_lines(self) -> list[str]:
        if not self.persistence:
            return ["persistence false"]
        store = self.workdir / "db"
        store.mkdir(exist_ok=True)
        # a trailing slash: Mosquitto joins the folder and the file name as strings
        return ["persistence true", f"persistence_location {store}/", "autosave_interval 1"]

    @property
    def persistence_file(self) -> Path:
        return self.workdir / "db" / "mosquitto.db"

    def wait_autosave(self, after_ns: int, timeout: float = 30.0) -> None:
        """Wait until the broker wrote its persistence file after `after_ns`
        (`time.time_ns()`): what a crash from now on restores holds everything until then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.persistence_file.stat().st_mtime_ns > after_ns:
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the broker did not autosave within {timeout:g} s")

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, saving nothing, as in a crash."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> Mosquitto:
        """Stop (cleanly: a persistent broker saves its database) and start on the same
        port, with the password file as it is (hashing 10,000 accounts again takes long)."""
        self.stop()
        return self.start(write_passwords=False)

    def dropped_lines(self) -> list[str]:
        """Lines of the log where the broker dropped messages for a client."""
        return [line for line in self.log.splitlines() if "dropped" in line.lower()]

    def add_users(self, users: dict[str, str]) -> None:
        """Add accounts and make the running broker reload its password file."""
        if self.dynsec:
            raise ValueError("with dynsec, provision devices through DynsecAccounts")
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
