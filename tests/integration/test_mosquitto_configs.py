"""Every shipped Mosquitto config (`deploy/mosquitto/*.conf`) starts cleanly: no warning
in the log, listening; and they all set the same delivery limits.

Each config is run as shipped except for what must point at this machine: the
listener's port, and the files it names (certificates, the dynsec plugin's file, the
persistence folder), made fresh in a private folder. A config naming any other file
(a password file, an ACL) fails here: the shipped configs use the plugin, because
Mosquitto 2.0 warns about the ACL line every device needs for the controller status. Run as root,
the broker drops to the `mosquitto` user, as the Debian service does, so the folder
is given to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import (
    DEV_CONF,
    PRODUCTION_CONF,
    SHIPPED_CONFS,
    SHIPPED_LIMITS,
    config_limits,
    free_port,
    mosquitto_binary,
)

pytestmark = pytest.mark.broker

PATH_KEYS = ("password_file", "acl_file", "include_dir", "psk_file", "crlfile", "capath")


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="illuminate-mosquitto-conf-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _certificates(folder: Path) -> None:
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(folder / "server.key")),
            *("-out", str(folder / "server.crt")),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(folder / "server.crt", folder / "ca.crt")


def _prepare(conf: Path, folder: Path) -> tuple[Path, int]:
    """The config, with this machine's port and files; and that port."""
    port = free_port()
    lines = []
    for raw in conf.read_text().splitlines():
        key, _, value = raw.partition(" ")
        if key == "listener":
            raw = f"listener {port} 127.0.0.1"
        elif key in ("cafile", "certfile", "keyfile"):
            if not (folder / "server.key").exists():
                _certificates(folder)
            raw = f"{key} {folder / Path(value).name}"
        elif key in PATH_KEYS:
            raise AssertionError(f"{conf.name}: {key} is not prepared by this test")
        elif key == "plugin_opt_config_file":
            dynsec = folder / "dynamic-security.json"
            subprocess.run(
                ["mosquitto_ctrl", "dynsec", "init", str(dynsec), "illuminate-admin", "pw"],
                check=True,
                capture_output=True,
            )
            raw = f"plugin_opt_config_file {dynsec}"
        elif key == "persistence_location":
            (folder / "db").mkdir()
            raw = f"persistence_location {folder / 'db'}/"
        elif key == "plugin":
            assert Path(value.strip()).exists(), f"{conf.name}: no plugin at {value}"
        lines.append(raw)
    user = "mosquitto" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    lines += [
        f"user {user}",
        f"log_dest file {folder / 'mosquitto.log'}",
        *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
    ]
    out = folder / conf.name
    out.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        entry = pwd.getpwnam("mosquitto")
        for path in (folder, *folder.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return out, port


def test_the_shipped_configs_are_the_development_and_production_ones() -> None:
    assert DEV_CONF in SHIPPED_CONFS and PRODUCTION_CONF in SHIPPED_CONFS


@pytest.mark.parametrize("conf", SHIPPED_CONFS, ids=lambda p: p.name)
def test_the_config_starts_without_warnings(conf: Path, folder: Path) -> None:
    prepared, _port = _prepare(conf, folder)
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(prepared)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    log_file = folder / "mosquitto.log"
    try:
        # the log, not a connection: a bare TCP probe of a TLS listener logs an error
        deadline = time.monotonic() + 30
        while "running" not in (log_file.read_text() if log_file.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.05)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    log = (folder / "mosquitto.log").read_text() + output.decode(errors="replace")
    assert "running" in log, log
    assert "warning" not in log.lower(), log
    assert "error" not in log.lower(), log


def test_every_config_has_the_shipped_limits() -> None:
    assert SHIPPED_LIMITS, "dev.conf sets no delivery limit"
    for conf in SHIPPED_CONFS:
        assert config_limits(conf) == SHIPPED_LIMITS, conf.name


def test_the_development_config_uses_the_plugin_on_loopback() -> None:
    keys = _settings(DEV_CONF)
    assert keys["listener"][1] == "127.0.0.1"
    assert keys["allow_anonymous"] == ["false"]
    assert keys["plugin"][0].endswith("mosquitto_dynamic_security.so")
    assert "password_file" not in keys and "acl_file" not in keys


def _settings(conf: Path) -> dict[str, list[str]]:
    settings = [line.split() for line in conf.read_text().splitlines()]
    return {words[0]: words[1:] for words in settings if words and not words[0].startswith("#")}


def test_the_production_config_is_locked_down() -> None:
    keys = _settings(PRODUCTION_CONF)
    assert keys["allow_anonymous"] == ["false"]
    assert keys["allow_zero_length_clientid"] == ["false"]
    assert keys["tls_version"] == ["tlsv1.2"]
    assert keys["plugin"][0].endswith("mosquitto_dynamic_security.so")
    assert "password_file" not in keys and "acl_file" not in keys
    assert keys["persistence"] == ["true"]
