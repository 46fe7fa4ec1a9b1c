"""`illuminate agent` and `illuminate simulate`: the device side of the command line.

The `illuminate` CLI (controller/cli.py) registers these with `add_agent_parser` and
`add_simulate_parser`; each sets `func`, a handler that takes the parsed arguments and
returns the exit code. `python -m devices.commands` runs them without the controller.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from devices.agent import Agent
from devices.clocksync import MIN_SPAN_S
from devices.connection import BrokerAddress
from devices.kernelclock import kernel_clock_synced
from devices.light_output import add_arguments as add_light_output_arguments
from devices.light_output import from_args as light_output_settings
from devices.light_output import open_output
from devices.limits import DescriptorLimitError, descriptors_needed, raise_descriptor_limit
from devices.pacing import Pacing
from devices.planstore import DIR_MODE, FilePlanStore, default_state_file
from devices.progress import Progress
from devices.protocol import DEFAULT_ROOT, Topics, check_device_id
from devices.sensor import SENSOR_KINDS, Sensor, open_sensor
from devices.simulator import DEFAULT_PREFIX, Fleet, FleetSpec

PASSWORD_ENV = "ILLUMINATE_DEVICE_PASSWORD"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
PROGRESS_S = 2.0
"""Seconds between progress lines while devices are missing."""

if TYPE_CHECKING:
    # what `ArgumentParser.add_subparsers()` returns
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


class CommandError(Exception):
    """A bad argument or input file: reported as one line, exit code 2."""


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must not be negative")
    return n


def _positive(value: str) -> int:
    n = _count(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return n


def _keepalive(value: str) -> int:
    n = _count(value)
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 1 and 65535 seconds")
    return n


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < rate <= 100_000:
        raise argparse.ArgumentTypeError(f"{value!r} must be above 0 and at most 100000")
    return rate


def seconds_arg(value: str) -> float:
    """argparse type: seconds, 0 to one day."""
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= s <= 86400:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 86400 seconds")
    return s


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker")
    group.add_argument(
        "--broker",
        metavar="URL",
        default=DEFAULT_BROKER,
        help=f"MQTT broker, mqtt://host[:port] or mqtts://host[:port] (default {DEFAULT_BROKER})",
    )
    group.add_argument(
        "--ca-file",
        metavar="FILE",
        help="CA certificates to verify an mqtts:// broker (default: the system's)",
    )
    group.add_argument(
        "--topic-root",
        metavar="ROOT",
        default=DEFAULT_ROOT,
        help=f"topic root of the native protocol (default {DEFAULT_ROOT})",
    )
    secret = parser.add_argument_group(
        "device password", f"taken from --password, --password-file or ${PASSWORD_ENV}"
    )
    exclusive = secret.add_mutually_exclusive_group()
    exclusive.add_argument("--password", metavar="P", help="the device's MQTT password")
    exclusive.add_argument(
        "--password-file", metavar="FILE", help="read the password from the first line of FILE"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log more (every connection and step)"
    )


def add_agent_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register `illuminate agent`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent",
        help="run one native device agent (a simulated fixture, or DMX floodlights)",
        description=(
            "Run the native device agent for one device until Ctrl-C (a clean stop).\n"
            "It connects with its device id as MQTT username and client id, receives its\n"
            "retained plan, applies each step at its instant by this machine's clock and\n"
            "acknowledges every stage. The fixture is simulated unless --output names\n"
            'a DMX output (sACN or Art-Net floodlights, see "light output").\n'
            "It measures this machine's clock against the controller's clock beacons and\n"
            "reports the offset; while it is beyond the controller's tolerance, it applies\n"
            "by the controller's time instead (this clock corrected by the offset).\n"
            "It keeps the plan it holds, the highest version it took and the last step\n"
            "applied in a state file of its own (mode 0600, replaced atomically): after a\n"
            "restart it shows the step in effect at once, times the steps still to come,\n"
            "and refuses any older plan the broker kept retained. An unreadable state file\n"
            "is logged, kept aside as FILE.corrupt, and the agent starts without a plan."
        ),
        epilog=(
            "example:\n"
            "  illuminate agent --broker mqtt://broker.example:1883 --id leuven-town-hall \\\n"
            "      --password-file /etc/illuminate/device.pw"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--id",
        dest="device_id",
        metavar="ID",
        required=True,
        help="the device id (also its MQTT username): 1-48 of a-z, 0-9 and '-'",
    )
    parser.add_argument(
        "--clock-settle-s",
        type=seconds_arg,
        default=MIN_SPAN_S,
        metavar="S",
        help=(
            "how long the agent gathers the controller's clock beacons before it trusts "
            f"their estimate of its clock's offset (default {MIN_SPAN_S:g}; a beacon held "
            "up on the way looks like a clock that runs ahead, so one is not enough)"
        ),
    )
    parser.add_argument(
        "--state-file",
        metavar="FILE",
        help=(
            "where the agent keeps its plan across restarts (default "
            "$XDG_STATE_HOME/illuminate/agent-ID.json, or ~/.local/state/illuminate/"
            "agent-ID.json)"
        ),
    )
    _add_sensor_arguments(parser)
    add_light_output_arguments(parser)
    _add_connection_arguments(parser)
    parser.set_defaults(func=run_agent)
    return parser


def _add_sensor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "light sensor",
        "a sensor facing the lit surface: after each step the agent reads it and puts the "
        'reading in its applied ack (docs/devices.md, "Light sensor")',
    )
    group.add_argument(
        "--sensor",
        choices=SENSOR_KINDS,
        default="none",
        help="none (default), sim (sees what the fixture shows), or tcs34725 (I2C)",
    )
    group.add_argument(
        "--sensor-wrong-colour",
        metavar="HEX",
        help="sim only: the sensor sees this colour (#RRGGBB) instead of the fixture's",
    )
    group.add_argument(
        "--sensor-bus", metavar="N", type=int, default=1, help="tcs34725: I2C bus (default 1)"
    )
    group.add_argument(
        "--sensor-full-scale",
        metavar="COUNT",
        type=float,
        help="tcs34725 (required): its brightest channel's count at full output",
    )
    group.add_argument(
        "--sensor-gain", metavar="X", type=int, choices=(1, 4, 16, 60), help="tcs34725 gain"
    )
    group.add_argument(
        "--sensor-integration-ms", metavar="MS", type=float, help="tcs34725 integration time"
    )


def _sensor(args: argparse.Namespace) -> Sensor | None:
    try:
        return open_sensor(
            args.sensor,
            wrong_colour=args.sensor_wrong_colour,
            bus=args.sensor_bus,
            full_scale=args.sensor_full_scale,
            gain=args.sensor_gain,
            integration_ms=args.sensor_integration_ms,
        )
    except (ValueError, OSError) as exc:
        raise CommandError(f"light sensor: {exc}") from None


def add_simulate_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register `illuminate simulate`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run a fleet of simulated native devices",
        description=(
            "Run many simulated native devices in one process until Ctrl-C. Each has its\n"
            "own MQTT connection, client id and credentials (username = device id), so the\n"
            "broker's ACL applies as to real devices. They connect at a bounded pace and\n"
            "retry with backoff; a progress line says every few seconds how many are\n"
            "connected and why the others are not, until all are.\n"
            "The knobs make some devices misbehave; they take disjoint groups in order:\n"
            "first the --offline devices, then the --silent, --late and --reject ones.\n"
            "Knobs also apply to a --fleet file."
        ),
        epilog=(
            "examples:\n"
            "  illuminate simulate --count 20 --password devpw --offline 2 --silent 1\n"
            "  illuminate simulate --fleet fleet.yaml --broker mqtt://127.0.0.1:1883\n\n"
            "A fleet file is JSON or YAML, a list of devices such as\n"
            "  - {id: sim-001, password: pw, start_offline_s: 30,\n"
            "     behaviour: {ack: late, ack_delay_s: 5}}\n"
            "where behaviour.ack is normal, never, late or reject.\n\n"
            "Every device holds one socket: the command raises its file-descriptor limit\n"
            "to the hard limit and exits with code 3 when even that is too low."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("the fleet").add_mutually_exclusive_group(required=True)
    source.add_argument("--fleet", metavar="FILE", help="read the devices from a JSON/YAML file")
    source.add_argument(
        "--count", metavar="N", type=_count, help="generate N devices sharing one password"
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"id prefix of generated devices, PREFIX001, PREFIX002... (default {DEFAULT_PREFIX})",
    )
    knobs = parser.add_argument_group("misbehaving devices")
    knobs.add_argument(
        "--offline", metavar="N", type=_count, default=0, help="N devices start offline"
    )
    knobs.add_argument(
        "--offline-for",
        metavar="S",
        type=seconds_arg,
        default=10.0,
        help="how long they stay offline before connecting (default 10)",
    )
    knobs.add_argument(
        "--silent", metavar="N", type=_count, default=0, help="N devices apply but never ack"
    )
    knobs.add_argument(
        "--late", metavar="N", type=_count, default=0, help="N devices send each ack late"
    )
    knobs.add_argument(
        "--late-by",
        metavar="S",
        type=seconds_arg,
        default=5.0,
        help="how late their acks are (default 5)",
    )
    knobs.add_argument(
        "--reject", metavar="N", type=_count, default=0, help="N devices reject every plan"
    )
    knobs.add_argument("--reject-reason", metavar="TEXT", help="the reason they give")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help=(
            "keep each device's plan in DIR/ID.json, so a restarted fleet resumes its plans"
            " (default: in memory only)"
        ),
    )
    parser.add_argument(
        "--applied-log",
        metavar="FILE",
        help=(
            "append one JSON line to FILE for every step a device applies (device, version,"
            " step_at, applied_at, state), written before its ack"
        ),
    )
    pace = parser.add_argument_group("connecting")
    pace.add_argument(
        "--connect-rate",
        metavar="N",
        type=_rate,
        default=Pacing.rate,
        help=f"new connection attempts per second, at most (default {Pacing.rate:g})",
    )
    pace.add_argument(
        "--connect-concurrency",
        metavar="N",
        type=_positive,
        default=Pacing.concurrency,
        help=f"attempts waiting for their CONNACK at once, at most (default {Pacing.concurrency})",
    )
    pace.add_argument(
        "--keepalive",
        metavar="S",
        type=_keepalive,
        default=30,
        help="MQTT keepalive of every device connection, seconds (default 30)",
    )
    _add_connection_arguments(parser)
    parser.set_defaults(func=run_simulate)
    return parser


# ---------------------------------------------------------------------- handlers


def _setup_logging(verbose: bool, default: int) -> None:
    """Log to stderr, unless the caller (the `illuminate` CLI) already set logging up."""
    if verbose:
        default = logging.DEBUG if default <= logging.INFO else logging.INFO
    logging.basicConfig(
        level=default,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _password(args: argparse.Namespace, *, required: bool) -> str | None:
    if args.password is not None:
        password: str | None = args.password
    elif args.password_file is not None:
        try:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CommandError(
                f"cannot read --password-file {args.password_file}: {exc.strerror or exc}"
            ) from None
        password = lines[0] if lines else ""
    else:
        password = os.environ.get(PASSWORD_ENV)
    if password == "":
        raise CommandError("the device password is empty")
    if password is None and required:
        raise CommandError(
            f"give the device password: --password, --password-file or ${PASSWORD_ENV}"
        )
    return password


def _broker(args: argparse.Namespace) -> BrokerAddress:
    try:
        return BrokerAddress.parse(args.broker)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _topics(args: argparse.Namespace) -> Topics:
    try:
        return Topics(args.topic_root)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _state_folder(folder: Path, option: str) -> None:
    """Make `folder` (mode 0700) or raise CommandError saying why it cannot be used."""
    try:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise CommandError(f"cannot create the {option} folder {folder}: {why}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write to the {option} folder {folder}")


def _state_file(value: str | None, device_id: str) -> Path:
    path = Path(value) if value else default_state_file(device_id)
    if path.is_dir():
        raise CommandError(f"--state-file {path} is a folder; name a file")
    _state_folder(path.parent, "--state-file")
    return path


def _run_until_interrupted(tick: Callable[[], None], interval: float = 0.5) -> None:
    """Call `tick` every `interval` until SIGINT (Ctrl-C) or SIGTERM."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    try:
        while not stop.wait(interval):
            tick()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def _fail(command: str, exc: Exception) -> int:
    print(f"illuminate {command}: error: {exc}", file=sys.stderr)
    return 2


def run_agent(args: argparse.Namespace) -> int:
    """Handler of `illuminate agent`."""
    try:
        device_id = args.device_id
        try:
            check_device_id(device_id)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        broker = _broker(args)
        if broker.username is not None and broker.username != device_id:
            raise CommandError("the user in --broker must be the device id, or left out")
        password = _password(args, required=broker.password is None)
        topics = _topics(args)
        state_file = _state_file(args.state_file, device_id)
        sensor = _sensor(args)
        try:  # light output: the simulated fixture, or DMX floodlights
            light = open_output(light_output_settings(args), device_id)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    except CommandError as exc:
        return _fail("agent", exc)
    _setup_logging(args.verbose, logging.INFO)
    agent = Agent(
        device_id,
        broker,
        password=password,
        topics=topics,
        fixture=light.fixture,
        ca_file=args.ca_file,
        store=FilePlanStore(state_file, device_id),
        clock_synced=kernel_clock_synced,
        sensor=sensor,
    )
    agent.device.controller_time.min_span_s = args.clock_settle_s
    print(f"agent {device_id}: state in {state_file}")
    print(f"agent {device_id}: light output {light.describe()}")
    print(f"agent {device_id}: connecting to {agent.address.redacted()} (Ctrl-C to stop)")
    sys.stdout.flush()
    agent.start()
    try:
        _run_until_interrupted(lambda: None)
    finally:
        print(f"agent {device_id}: stopping")
        agent.stop()
        stop_sensor = getattr(sensor, "stop", None)
        if callable(stop_sensor):
            stop_sensor()
        light.close()
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of `illuminate simulate`."""
    try:
        broker = _broker(args)
        topics = _topics(args)
        if args.fleet is not None:
            try:
                spec = FleetSpec.load(args.fleet)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        else:
            password = _password(args, required=True)
            assert password is not None
            try:
                spec = FleetSpec.generate(args.count, password, args.prefix)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        try:
            spec = spec.with_knobs(
                offline=args.offline,
                silent=args.silent,
                late=args.late,
                reject=args.reject,
                offline_s=args.offline_for,
                late_s=args.late_by,
                reject_reason=args.reject_reason,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        state_dir = Path(args.state_dir) if args.state_dir else None
        if state_dir is not None:
            _state_folder(state_dir, "--state-dir")
        applied_log = Path(args.applied_log) if args.applied_log else None
        if applied_log is not None:
            if applied_log.is_dir():
                raise CommandError(f"--applied-log {applied_log} is a folder; name a file")
            _state_folder(applied_log.parent, "--applied-log")
    except CommandError as exc:
        return _fail("simulate", exc)
    _setup_logging(args.verbose, logging.WARNING)
    if not args.verbose:
        # a line per device and step would drown a large fleet: the progress lines
        # say how it goes; -v shows every connection and step again
        logging.getLogger("devices").setLevel(logging.WARNING)
    total = len(spec.devices)
    try:
        raise_descriptor_limit(descriptors_needed(total))
    except DescriptorLimitError as exc:
        print(f"illuminate simulate: error: {exc}", file=sys.stderr)
        return 3
    pacing = Pacing(rate=args.connect_rate, concurrency=args.connect_concurrency)
    fleet = Fleet(
        spec,
        broker,
        topics=topics,
        ca_file=args.ca_file,
        pacing=pacing,
        keepalive_s=args.keepalive,
        state_dir=state_dir,
        applied_log=applied_log,
    )
    print(
        f"simulating {total} devices on {broker.redacted()} ({_knob_summary(spec)}; "
        f"connecting up to {pacing.rate:g}/s, {pacing.concurrency} at once; Ctrl-C to stop)"
    )
    sys.stdout.flush()
    progress = Progress(every=PROGRESS_S)
    # Thousands of devices are millions of objects that live as long as the process.
    # The collector would scan them all again and again, pausing the one loop that
    # applies every device's steps: keep them out of its scans once built, and once
    # more when every device is online (their connections are long-lived too).
    gc.freeze()
    frozen_online = False

    def report() -> None:
        nonlocal frozen_online
        summary = fleet.summary()
        if not frozen_online and summary.missing == 0:
            gc.freeze()
            frozen_online = True
        line = progress.update(summary)
        if line is not None:
            print(line)
            sys.stdout.flush()

    fleet.start()
    try:
        _run_until_interrupted(report)
    finally:
        print("stopping the fleet")
        sys.stdout.flush()
        fleet.stop(timeout=5.0 + total / 2000)
    return 0


def _knob_summary(spec: FleetSpec) -> str:
    offline = sum(1 for d in spec.devices if d.start_offline_s is not None)
    modes = {"never": 0, "late": 0, "reject": 0}
    for device in spec.devices:
        if device.behaviour.ack in modes:
            modes[device.behaviour.ack] += 1
    return (
        f"{offline} start offline, {modes['never']} silent, {modes['late']} late, "
        f"{modes['reject']} rejecting"
    )


def build_parser() -> argparse.ArgumentParser:
    """A parser with just the device commands, for `python -m devices.commands`."""
    parser = argparse.ArgumentParser(prog="illuminate", description="Illuminate device side.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_agent_parser(subparsers)
    add_simulate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
