"""`illuminate devices test` and `illuminate devices health`: a technician's tools
(with `devices register`, controller/device_register_cli.py).

They talk to a running controller over its staff API (`POST /api/v1/devices/{id}/test`,
`GET /api/v1/devices/{id}/health`) with the user's token, so the same roles, city
rules, rate limits and audit log apply as over HTTP. The token comes from
`--token-file` or the `ILLUMINATE_TOKEN` environment variable; the address from `--url`,
or else the `[http]` settings of `--config`.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controller.cli_common import config_arg
from controller.settings import load_settings

TOKEN_ENV = "ILLUMINATE_TOKEN"
EXIT_NOT_APPLIED = 1
HTTP_TIMEOUT_S = 60.0
"""Longer than the longest test (30 s), so a test's own timeout is what answers."""


class ApiError(ValueError):
    """The controller refused, or could not be reached; the message says why."""


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    http = load_settings(args.config).http
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
    return f"http://{host}:{http.port}"


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(f"cannot read {args.token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ApiError(f"no API token: pass --token-file FILE or set {TOKEN_ENV}")
    return token


def call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One staff API request; the JSON answer, or ApiError with the controller's words."""
    url = _base_url(args) + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {_token(args)}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            refusal = _refusal(exc)
        finally:
            exc.close()  # its connection, at once rather than when collected
        raise ApiError(refusal) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach the controller at {url}: {reason}") from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        detail = "; ".join(f"{d.get('path')}: {d.get('message')}" for d in detail)
    text = f"{exc.code}: {detail or exc.reason}"
    retry = exc.headers.get("Retry-After") if exc.headers else None
    if exc.code == 429 and retry:
        text += f" (Retry-After: {retry} s)"
    return text


def cmd_devices_test(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"seconds": args.seconds}
    if args.color:
        body["color"] = args.color
    if args.level is not None:
        body["level"] = args.level
    answer = call(args, "POST", f"/api/v1/devices/{args.id}/test", body)
    if args.json:
        print(json.dumps(answer, indent=2))
    elif answer["result"] == "applied":
        print(
            f"{answer['device']}: applied in {answer['round_trip_ms']:.0f} ms "
            f"(test plan v{answer['version']}); back on its plan at {answer['back_at']}"
        )
    elif answer["result"] == "timeout":
        print(
            f"{answer['device']}: timeout: no apply report within {answer['seconds']:g} s "
            f"(test plan v{answer['version']}, last stage {answer['stage']})"
        )
    else:
        reason = f": {answer['reason']}" if answer.get("reason") else ""
        print(f"{answer['device']}: {answer['result']}{reason} (test plan v{answer['version']})")
    return 0 if answer["result"] == "applied" else EXIT_NOT_APPLIED


def cmd_devices_health(args: argparse.Namespace) -> int:
    answer = call(args, "GET", f"/api/v1/devices/{args.id}/health")
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    online = {True: "online", False: "offline", None: "never seen"}[answer["online"]]
    clock = answer.get("clock")
    offset = "-"
    if clock and clock["offset_ms"] is not None:
        offset = f"{clock['offset_ms']:+d} ms ({clock['source']})"
    if clock and clock["synced"] is not None:
        offset += ", synchronised" if clock["synced"] else ", NOT synchronised"
    plan = answer.get("plan")
    lines = [
        f"device     {answer['id']} at {answer['site']} ({answer['city']})",
        f"status     {online} (since {answer['status_at'] or '-'})",
        f"last seen  {answer['last_seen'] or '-'}",
        f"firmware   {answer['firmware'] or '-'}",
        f"clock      {offset}",
        "plan       "
        + (
            f"v{plan['version']} {plan['state']}{' (test)' if plan['test'] else ''}"
            if plan
            else "-"
        ),
    ]
    applied = answer.get("applied")
    if applied and applied.get("confirmed_by"):
        lines.append(
            f"confirmed  v{applied['version']} step {applied['step_at']} "
            f"by {applied['confirmed_by']}"
        )
    mismatch = answer.get("mismatch")
    if mismatch:
        reason = mismatch["detail"].get("reason") or "-"
        lines.append(f"mismatch   v{mismatch['version']} step {mismatch['step_at']}: {reason}")
    reported = answer.get("reported")
    if reported:
        lines.append(f"shows      {json.dumps(reported['state'])} at {reported['reported_at']}")
    print("\n".join(lines))
    return 0


def _client_args(parser: argparse.ArgumentParser) -> None:
    config_arg(parser)
    parser.add_argument("id", help="the device id")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="the controller's web address (default: from the [http] settings, "
        "http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding your API token (default: the {TOKEN_ENV} environment variable)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def add_device_ops_parsers(dsub: Any) -> None:
    """`devices register`, `devices test` and `devices health`, under the `devices`
    command's subparsers."""
    from controller.device_register_cli import add_register_parser

    add_register_parser(dsub)
    test = dsub.add_parser(
        "test",
        help="flash a device and time its apply report (through a running controller)",
        description="Send the device a short test plan through the running controller "
        "and print the round trip to 'applied', or 'timeout' when it did not report "
        f"within --seconds. Exit status 0 when applied, {EXIT_NOT_APPLIED} otherwise. "
        "A test never shows on the public page; the device goes back to its plan by "
        "itself. Tests are rate-limited per device and per user.",
    )
    _client_args(test)
    test.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="how long the flash lasts and the answer waits (1-30, default 10)",
    )
    test.add_argument("--color", metavar="#RRGGBB", help="the flash colour (default #FFFFFF)")
    test.add_argument("--level", type=int, metavar="N", help="brightness 1-100 (default 100)")
    test.set_defaults(func=cmd_devices_test)

    health = dsub.add_parser(
        "health",
        help="show a device's health (through a running controller)",
        description="Print whether the device is online, when it was last seen, its "
        "firmware, its clock offset and its current plan version and state.",
    )
    _client_args(health)
    health.set_defaults(func=cmd_devices_health)
