"""The agent's light output settings: which output, where it sends, and the fixtures.

They come from a file (`--fixture-config`, YAML or JSON) and/or the agent's flags (see
devices.light_output); both are checked here, by one model, with messages that say which
setting is wrong; devices.light_output makes the fixture they describe.

A file looks like::

    output: sacn              # sim, sacn or artnet
    target: 10.20.0.31        # sACN: the receiver (unset: multicast); Art-Net: the node
    sync_universe: 9          # sACN: switch every universe together
    fixtures:
      - {name: north, universe: 1, address: 1, layout: drgb, gains: [1.0, 0.62, 1.0]}
      - name: south
        universe: 2
        address: 17
        layout: rgbw
        matrix: [[1, 0, 0], [0, 0.62, 0.05], [0, 0, 1]]
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.colour import Correction
from devices.dmx import Head, Layout, check_address, check_overlaps
from devices.dmx_artnet import ARTNET_PORT
from devices.dmx_artnet import UNIVERSES as ARTNET_UNIVERSES
from devices.dmx_sacn import PRIORITIES, SACN_PORT
from devices.dmx_sacn import UNIVERSES as SACN_UNIVERSES

OutputKind = Literal["sim", "sacn", "artnet"]
UNIVERSES: dict[str, range] = {
    "sacn": SACN_UNIVERSES,
    "artnet": ARTNET_UNIVERSES,
    "sim": range(0, 64000),
}
PROTOCOL_NAMES = {"sacn": "sACN", "artnet": "Art-Net", "sim": "the simulated output"}
DEFAULT_UNIVERSE = {"sacn": 1, "artnet": 0, "sim": 1}

Triple = tuple[float, float, float]
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixtureSettings(_Settings):
    """One head: where it sits on which universe, its layout and its calibration."""

    name: str = Field(default="", max_length=64)
    universe: int
    address: int = 1
    layout: Layout = Layout.RGB
    gains: Triple | None = None
    """Red, green and blue gains, 0 to 4 (1 leaves a channel as it is)."""
    matrix: tuple[Triple, Triple, Triple] | None = None
    """A 3x3 matrix, rows red, green, blue of the output; coefficients -4 to 4."""

    @model_validator(mode="after")
    def _check(self) -> FixtureSettings:
        try:
            check_address(self.address, self.layout)
        except ValueError as exc:
            raise ValueError(f"{self.label()}: {exc}") from None
        if self.gains is not None and self.matrix is not None:
            raise ValueError(f"{self.label()}: give gains or a matrix, not both")
        self.correction()
        return self

    def label(self) -> str:
        where = f"universe {self.universe} address {self.address}"
        return f"fixture {self.name} ({where})" if self.name else f"the fixture at {where}"

    def correction(self) -> Correction:
        try:
            if self.gains is not None:
                return Correction.from_gains(*self.gains)
            if self.matrix is not None:
                return Correction(self.matrix)
        except ValueError as exc:
            raise ValueError(f"{self.label()}: {exc}") from None
        return Correction()

    def head(self) -> Head:
        return Head(self.universe, self.address, self.layout, self.correction(), self.name)


class LightOutputSettings(_Settings):
    """What the agent drives. `sim` without fixtures is the plain simulated fixture."""

    output: OutputKind = "sim"
    target: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    priority: int | None = None
    sync_universe: int | None = None
    artsync: bool = False
    source_name: str | None = Field(default=None, min_length=1, max_length=63)
    fixtures: list[FixtureSettings] = Field(default_factory=list, max_length=512)

    @field_validator("target")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError(f"{value!r} is not an IP address or a host name") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> LightOutputSettings:
        name = PROTOCOL_NAMES[self.output]
        allowed = UNIVERSES[self.output]
        if self.output != "sim" and not self.fixtures:
            raise ValueError(f"{name} needs at least one fixture")
        for fixture in self.fixtures:
            if fixture.universe not in allowed:
                raise ValueError(
                    f"{fixture.label()}: {name} universes run "
                    f"{allowed.start}-{allowed.stop - 1}, not {fixture.universe}"
                )
        check_overlaps(f.head() for f in self.fixtures)
        if self.output == "artnet" and self.target is None:
            raise ValueError("Art-Net needs the node's address as the target")
        if self.output != "sacn":
            for key in ("priority", "sync_universe"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for sACN only")
        if self.output != "artnet" and self.artsync:
            raise ValueError("artsync is for Art-Net only (sACN synchronises on sync_universe)")
        if self.priority is not None and self.priority not in PRIORITIES:
            raise ValueError(f"sACN priority runs 0-200, not {self.priority}")
        if self.sync_universe is not None:
            if self.sync_universe not in SACN_UNIVERSES:
                raise ValueError(f"sACN universes run 1-63999, not {self.sync_universe}")
            if any(f.universe == self.sync_universe for f in self.fixtures):
                raise ValueError(
                    f"sync universe {self.sync_universe} also carries a fixture; "
                    "choose a universe no fixture uses"
                )
        return self

    def heads(self) -> list[Head]:
        return [fixture.head() for fixture in self.fixtures]

    def describe(self) -> str:
        """One line for the agent's start-up: the output and every head."""
        if self.output == "sim" and not self.fixtures:
            return "simulated fixture"
        if self.output == "sacn":
            where = f"sACN to {self.target or 'multicast'}"
            if self.sync_universe is not None:
                where += f", sync universe {self.sync_universe}"
        elif self.output == "artnet":
            where = f"Art-Net to {self.target}" + (", ArtSync" if self.artsync else "")
        else:
            where = "simulated DMX (values logged)"
        heads = ", ".join(
            f"{f.name + ' ' if f.name else ''}u{f.universe}/{f.address} {f.layout.value}"
            + (" calibrated" if not f.correction().is_identity else "")
            for f in self.fixtures
        )
        return f"{where}: {heads}"


def problems(exc: ValidationError, labels: dict[str, str] | None = None) -> str:
    """A pydantic error as one line: `where: what` for each problem (at most five)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        if re.fullmatch(r"fixtures\.\d+", loc):
            loc = ""  # the message names the fixture
        where = (labels or {}).get(loc, loc)
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw settings of a fixture file: JSON (`.json`) or YAML (anything else)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read fixture file {path}: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"fixture file {path} is not valid JSON/YAML: {exc}") from None
    if data is None:
        return {}
    if isinstance(data, list):
        data = {"fixtures": data}
    if not isinstance(data, dict):
        raise ValueError(f"fixture file {path}: expected a mapping of settings or a list")
    return data


def load(path: str | Path) -> LightOutputSettings:
    """Read and check a fixture file. Raises ValueError naming the file and the setting."""
    data = read_file(path)
    try:
        return LightOutputSettings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"fixture file {path}: {problems(exc)}") from None


def default_port(output: OutputKind) -> int:
    return ARTNET_PORT if output == "artnet" else SACN_PORT
