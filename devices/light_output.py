"""`illuminate agent`'s light output: its flags, and the fixture they make.

`add_arguments` adds the "light output" argument group; `from_args` reads the flags and
the `--fixture-config` file into `LightOutputSettings` (a flag given overrides the
file's setting) and `open_output` makes the `LightOutput` the agent drives.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from devices.dmx import Layout
from devices.dmx_artnet import ArtNetOutput
from devices.dmx_config import (
    DEFAULT_UNIVERSE,
    LightOutputSettings,
    default_port,
    problems,
    read_file,
)
from devices.dmx_fixture import DmxFixture
from devices.dmx_output import DmxOutput, MemoryDmxOutput
from devices.dmx_sacn import DEFAULT_PRIORITY, SacnOutput
from devices.fixture import Fixture, SimulatedFixture

log = logging.getLogger(__name__)

_FIXTURE_FLAGS = {
    "universe": "--universe",
    "address": "--address",
    "layout": "--layout",
    "gains": "--gains",
    "matrix": "--matrix",
}
_OUTPUT_FLAGS = {
    "output": "--output",
    "target": "--dmx-target",
    "port": "--dmx-port",
    "priority": "--priority",
    "sync_universe": "--sync-universe",
    "artsync": "--artsync",
}


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _numbers(value: str, count: int, what: str) -> tuple[float, ...]:
    parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: {what} are numbers") from None
    if len(numbers) != count:
        raise argparse.ArgumentTypeError(f"{value!r}: give {count} numbers for {what}")
    return numbers


def _gains(value: str) -> tuple[float, ...]:
    return _numbers(value, 3, "the red, green and blue gains")


def _matrix(value: str) -> tuple[tuple[float, ...], ...]:
    n = _numbers(value, 9, "the matrix (row by row)")
    return (n[0:3], n[3:6], n[6:9])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The "light output" group of `illuminate agent`."""
    group = parser.add_argument_group(
        "light output",
        "What the agent drives (default: a simulated fixture). DMX floodlights take\n"
        "--output sacn or artnet, and one fixture from the flags below or several from\n"
        "--fixture-config FILE; a flag given overrides the file. See docs/devices.md,\n"
        '"DMX floodlights (native agent)".',
    )
    group.add_argument(
        "--output",
        choices=("sim", "sacn", "artnet"),
        help="sim (default), sacn (E1.31) or artnet",
    )
    group.add_argument(
        "--fixture-config",
        metavar="FILE",
        help="YAML/JSON file with the output settings and a list of fixtures",
    )
    group.add_argument(
        "--dmx-target",
        metavar="HOST",
        help="sACN: the receiver's address (default multicast); Art-Net: the node's (required)",
    )
    group.add_argument(
        "--dmx-port",
        metavar="PORT",
        type=int,
        help="the receivers' UDP port (default 5568 sACN, 6454 Art-Net)",
    )
    group.add_argument(
        "--universe",
        metavar="N",
        type=int,
        help="the fixture's universe: sACN 1-63999 (default 1), Art-Net 0-32767 (default 0)",
    )
    group.add_argument(
        "--address",
        metavar="A",
        type=int,
        help="the fixture's start address, 1-512, its channels within the universe (default 1)",
    )
    group.add_argument(
        "--layout",
        choices=[layout.value for layout in Layout],
        help="the fixture's channels from its address: rgb (default), drgb (dimmer first), "
        "rgbw, rgbwa",
    )
    calibration = group.add_mutually_exclusive_group()
    calibration.add_argument(
        "--gains",
        metavar="R,G,B",
        type=_gains,
        help="colour calibration: a gain per channel, 0-4 (e.g. 1,0.62,1 when blue looks cyan)",
    )
    calibration.add_argument(
        "--matrix",
        metavar="M",
        type=_matrix,
        help="colour calibration: a 3x3 matrix, 9 numbers row by row (-4 to 4)",
    )
    group.add_argument(
        "--priority",
        metavar="N",
        type=int,
        help=f"sACN priority, 0-200 (default {DEFAULT_PRIORITY})",
    )
    group.add_argument(
        "--sync-universe",
        metavar="N",
        type=int,
        help="sACN: send synchronisation packets on this universe (no fixture on it)",
    )
    group.add_argument(
        "--artsync",
        action="store_true",
        default=None,
        help="Art-Net: follow every round of ArtDmx with an ArtSync",
    )


def from_args(args: argparse.Namespace) -> LightOutputSettings:
    """The settings the flags and the file give. Raises ValueError saying what is wrong."""
    data: dict[str, Any] = {}
    source = "the light output flags"
    if args.fixture_config:
        data = read_file(args.fixture_config)
        source = f"fixture file {args.fixture_config}"
    labels: dict[str, str] = {}
    for key, flag in _OUTPUT_FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            data[key] = value
            labels[key] = flag
    given = {k: getattr(args, _dest(f)) for k, f in _FIXTURE_FLAGS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    output = data.get("output", "sim")
    if given:
        if data.get("fixtures"):
            flags = ", ".join(_FIXTURE_FLAGS[k] for k in given)
            raise ValueError(
                f"{flags}: these flags describe one fixture, and {source} lists its own; "
                "use one or the other"
            )
        if "output" not in data:
            flags = ", ".join(_FIXTURE_FLAGS[k] for k in given)
            raise ValueError(
                f"{flags}: give --output sacn or artnet too "
                "(or --output sim to have the DMX values logged)"
            )
    if given or (output in ("sacn", "artnet") and not data.get("fixtures")):
        fixture = {"universe": DEFAULT_UNIVERSE.get(str(output), 1), **given}
        data["fixtures"] = [fixture]
        labels.update({f"fixtures.0.{k}": flag for k, flag in _FIXTURE_FLAGS.items()})
    try:
        return LightOutputSettings.model_validate(data)
    except ValidationError as exc:
        if args.fixture_config:
            raise ValueError(f"{source}: {problems(exc, labels)}") from None
        raise ValueError(problems(exc, labels)) from None


@dataclass
class LightOutput:
    """The fixture the agent drives, and how to stop its output cleanly."""

    settings: LightOutputSettings
    fixture: Fixture

    def close(self) -> None:
        """Stop the DMX output (sACN: streams terminated). Idempotent."""
        if isinstance(self.fixture, DmxFixture):
            self.fixture.close()

    def describe(self) -> str:
        return self.settings.describe()


def make_output(settings: LightOutputSettings, device_id: str) -> DmxOutput:
    """The DMX output the settings name (the memory one for `sim`)."""
    if settings.output == "sacn":
        return SacnOutput(
            destination=settings.target,
            port=settings.port or default_port("sacn"),
            priority=settings.priority if settings.priority is not None else DEFAULT_PRIORITY,
            sync_universe=settings.sync_universe,
            source_name=settings.source_name or f"Illuminate {device_id}",
        )
    if settings.output == "artnet":
        assert settings.target is not None
        port = settings.port or default_port("artnet")
        return ArtNetOutput(settings.target, port=port, sync=settings.artsync)
    return MemoryDmxOutput()


def open_output(settings: LightOutputSettings, device_id: str) -> LightOutput:
    """The fixture for `settings`: the simulated one, or DMX heads on their output."""
    if settings.output == "sim" and not settings.fixtures:
        return LightOutput(settings, SimulatedFixture())
    fixture = DmxFixture(settings.heads(), make_output(settings, device_id))
    return LightOutput(settings, fixture)
