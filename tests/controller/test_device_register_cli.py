"""`illuminate devices register` against a served staff API (real HTTP, real SQLite):
the password lands in a new mode-600 file only, and a refusal leaves no file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from controller.cli import main
from controller.registration import verify_secret
from controller.store.tables import DeviceRow
from tests.controller.test_devices_api import Served, served  # noqa: F401


def register(served: Served, *args: str) -> list[str]:  # noqa: F811
    url = str(served.http.base_url).rstrip("/")
    return ["devices", "register", *args, "--url", url]


def test_a_technician_registers_and_gets_the_password_in_a_private_file(
    served: Served,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ILLUMINATE_TOKEN", served.tokens["technician"])
    secret = tmp_path / "atomium-ctl.pw"
    argv = register(served, "atomium-ctl", "--site", "atomium", "--password-file", str(secret))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert password and password not in out
    with served.sessions() as session:
        row = session.get(DeviceRow, "atomium-ctl")
        assert (
            row is not None
            and row.secret_hash is not None
            and verify_secret(password, row.secret_hash)
        )
    assert "start it with: illuminate agent --broker mqtt" in out
    assert f"--id atomium-ctl --password-file {secret}" in out

    # an existing file is never overwritten, and nothing is registered
    argv = register(served, "other-ctl", "--site", "atomium", "--password-file", str(secret))
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert secret.read_text().strip() == password
    assert served.stores.registry.device_ids() == {"atomium-ctl"}


@pytest.mark.parametrize(
    ("site", "token", "said"),
    [
        ("menin-gate", "technician", "422"),  # another city's site: an unknown site
        ("atomium", None, "401"),
    ],
)
def test_a_refusal_leaves_no_password_file(
    served: Served,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    site: str,
    token: str | None,
    said: str,
) -> None:
    monkeypatch.setenv("ILLUMINATE_TOKEN", served.tokens[token] if token else "not-a-token")
    secret = tmp_path / "x.pw"
    assert main(register(served, "x-ctl", "--site", site, "--password-file", str(secret))) == 2
    assert said in capsys.readouterr().err
    assert not secret.exists()
    assert served.stores.registry.device_ids() == set()
