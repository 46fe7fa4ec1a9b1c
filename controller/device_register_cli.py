"""`illuminate devices register`: a technician registers a device through a running
controller (`POST /api/v1/devices`) with their token, as `devices test` does.

The device's new password goes into `--password-file` (created with mode 600, never
overwritten) and is not printed: the file is what `illuminate agent --password-file`
reads. The command prints the `illuminate agent` command that starts the device with
the broker address the controller gave, so a technician needs no other setting.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from controller.device_ops_cli import TOKEN_ENV, ApiError, call
from devices.protocol import DEFAULT_ROOT

PASSWORD_FILE_MODE = 0o600


def _create_secret_file(path: Path) -> int:
    """Open a new file only its owner may read; refuse one that exists."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PASSWORD_FILE_MODE)
    except FileExistsError:
        raise ApiError(
            f"{path} exists: give another --password-file (it is never overwritten)"
        ) from None
    except OSError as exc:
        raise ApiError(f"cannot create {path}: {exc.strerror or exc}") from None


def _topic_root(mqtt: dict[str, Any], device_id: str) -> str:
    plan = str(mqtt["topics"].get("plan", ""))
    suffix = f"/devices/{device_id}/plan"
    return plan[: -len(suffix)] if plan.endswith(suffix) else DEFAULT_ROOT


def agent_command(mqtt: dict[str, Any], device_id: str, password_file: Path) -> list[str]:
    """The `illuminate agent` command line for the device the controller answered for."""
    scheme = "mqtts" if mqtt["tls"] else "mqtt"
    argv = ["illuminate", "agent", "--broker", f"{scheme}://{mqtt['host']}:{mqtt['port']}"]
    argv += ["--id", device_id, "--password-file", str(password_file)]
    root = _topic_root(mqtt, device_id)
    if root != DEFAULT_ROOT:
        argv += ["--topic-root", root]
    return argv


def cmd_devices_register(args: argparse.Namespace) -> int:
    password_file = Path(args.password_file)
    body: dict[str, Any] = {"id": args.id, "site": args.site}
    adapter = getattr(args, "adapter", "native")
    if adapter != "native":
        body["adapter"] = adapter
        body["config"] = args.adapter_config
    descriptor = _create_secret_file(password_file)
    try:
        answer = call(args, "POST", "/api/v1/devices", body)
        mqtt = answer["mqtt"]
        if mqtt["password"] is not None:
            os.write(descriptor, (str(mqtt["password"]) + "\n").encode())
    except BaseException:
        os.close(descriptor)
        password_file.unlink(missing_ok=True)
        raise
    os.close(descriptor)
    if mqtt["password"] is None:  # a light behind a bridge that has its account already
        password_file.unlink(missing_ok=True)
        print(
            f"registered {answer['id']} at {args.site}, behind the bridge of "
            f"{', '.join(mqtt.get('shared_with', []))}: its account {mqtt['username']} and "
            "password are unchanged, and nothing was written"
        )
    else:
        print(
            f"registered {answer['id']} at {args.site}; its password is in {password_file}"
            " (mode 600)"
        )
    if adapter != "native":
        scheme = "mqtts" if mqtt["tls"] else "mqtt"
        print(
            f"on the device: broker {scheme}://{mqtt['host']}:{mqtt['port']}, "
            f"user and client id {mqtt['username']}"
        )
        topics = mqtt["topics"]
        print("it publishes: " + ", ".join(topics.get("reports", [])))
        print("it reads: " + ", ".join(topics.get("commands", [])))
        return 0
    command = shlex.join(agent_command(mqtt, answer["id"], password_file))
    print(f"start it with: {command}")
    return 0


def add_register_parser(dsub: Any) -> None:
    """`devices register`, under the `devices` command's subparsers."""
    from controller.cli_common import adapter_config_json, config_arg
    from controller.registrar import ADAPTERS

    register = dsub.add_parser(
        "register",
        help="register a device through a running controller and save its password",
        description="Register one device (native, or a third-party controller with "
        "--adapter and --adapter-config) at a site of your cities through the "
        "running controller (the same rules and audit log as POST /api/v1/devices). "
        "Its new password is written to --password-file, created with mode 600 (an "
        "existing file is never overwritten; nothing is written when the controller "
        "refuses), and the command prints the 'illuminate agent' command that starts "
        "the device with the broker address the controller gives devices.",
    )
    config_arg(register)
    register.add_argument("id", help="device id, also its MQTT username ([a-z0-9-], up to 48)")
    register.add_argument("--site", required=True, help="the site id it lights")
    register.add_argument(
        "--adapter",
        choices=ADAPTERS,
        default="native",
        help="how the controller speaks to it (default native: the Illuminate agent)",
    )
    register.add_argument(
        "--adapter-config",
        dest="adapter_config",
        type=adapter_config_json,
        default={},
        metavar="JSON",
        help="the adapter's settings as a JSON object (docs/devices.md)",
    )
    register.add_argument(
        "--password-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="new file to write the device's password to (mode 600)",
    )
    register.add_argument(
        "--url",
        metavar="URL",
        help="the controller's web address (default: from the [http] settings, "
        "http://127.0.0.1:8000)",
    )
    register.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding your API token (default: the {TOKEN_ENV} environment variable)",
    )
    register.set_defaults(func=cmd_devices_register)
