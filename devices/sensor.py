"""The light sensor an agent reads after applying a step: an interface, and a simulation.

A native device with a sensor facing the lit surface takes a reading once a step's output
has settled and puts it in its `applied` ack (`devices.protocol.Reading`): the colour it
saw and the level, in percent of the fixture's full output. The controller compares the
reading with the step's target (`controller/confirmation.py`): a match confirms the step
as `sensor`, a mismatch leaves it unconfirmed with the figures for staff to see.

A sensor implements `name`, `settle_s` and `read`:

- `settle_s`: how long after the output stops changing a reading covers only the new
  light (one full integration of the sensor, and a margin). The agent waits the step's
  own fade plus this before it reads, and acks then.
- `read(shown)`: one reading, quickly (it runs on the device's event-loop thread: a few
  register reads, never a wait). `shown` is what the fixture says it outputs: the
  simulated sensor sees that; a real one ignores it and measures. Raise on a fault: the
  agent then acks without a reading (the controller counts it as the fixture's echo).

`SimulatedSensor` is for tests, demos and the fleet simulator; `--sensor-wrong-colour`
makes it see another colour than the fixture shows (a wrong gel, a dead channel).
The TCS34725 driver is `devices/sensor_tcs34725.py`.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from devices.colour import RGB, chroma, hex_to_rgb, rgb_to_hex, value_percent
from devices.protocol import LightState, Reading

SensorKind = Literal["none", "sim", "tcs34725"]
SENSOR_KINDS: tuple[SensorKind, ...] = ("none", "sim", "tcs34725")
DARK = "#000000"
"""The colour a reading gives when the sensor saw no light."""


@runtime_checkable
class Sensor(Protocol):
    """Something that measures the light a fixture puts on the monument."""

    @property
    def name(self) -> str:
        """The sensor's model, as the reading names it (`sim`, `tcs34725`)."""
        ...

    @property
    def settle_s(self) -> float:
        """Seconds after the output settled before a reading covers only the new light."""
        ...

    def read(self, shown: LightState) -> Reading:
        """One reading now. `shown`: what the fixture says it outputs."""
        ...


def effective_level(state: LightState) -> float:
    """The output a light state puts out, in percent of full: its level times its
    colour's own value (`#000080` at 100 is half as bright as `#0000FF` at 100)."""
    if not state.on:
        return 0.0
    return state.level * value_percent(hex_to_rgb(state.color)) / 100


def dark_reading(sensor: str) -> Reading:
    return Reading(color=DARK, level=0.0, sensor=sensor)


class SimulatedSensor:
    """Sees what the fixture shows, exactly; or, with `wrong_colour`, that colour at the
    level the fixture shows (a sensor that sees a wrong colour: the check must catch it)."""

    name = "sim"
    settle_s = 0.0

    def __init__(self, *, wrong_colour: str | None = None) -> None:
        self.wrong_colour: RGB | None = None
        if wrong_colour is not None:
            colour = hex_to_rgb(wrong_colour)  # ValueError names the bad text
            if max(colour) == 0:
                raise ValueError("the wrong colour must not be black (#000000)")
            self.wrong_colour = colour

    def read(self, shown: LightState) -> Reading:
        level = effective_level(shown)
        if level <= 0:
            return dark_reading(self.name)
        colour = self.wrong_colour if self.wrong_colour is not None else hex_to_rgb(shown.color)
        return Reading(color=rgb_to_hex(chroma(colour)), level=round(level, 2), sensor=self.name)


def open_sensor(
    kind: SensorKind,
    *,
    wrong_colour: str | None = None,
    bus: int = 1,
    address: int | None = None,
    full_scale: float | None = None,
    gain: int | None = None,
    integration_ms: float | None = None,
) -> Sensor | None:
    """The sensor of `kind` (None for `none`). Raises ValueError for settings that do
    not fit the kind, OSError when a real sensor cannot be opened."""
    if kind == "none":
        if wrong_colour is not None:
            raise ValueError("--sensor-wrong-colour needs --sensor sim")
        return None
    if kind == "sim":
        return SimulatedSensor(wrong_colour=wrong_colour)
    if kind == "tcs34725":
        if wrong_colour is not None:
            raise ValueError("--sensor-wrong-colour is for the simulated sensor only")
        from devices.sensor_tcs34725 import Tcs34725

        return Tcs34725.open(
            bus,
            address=address,
            full_scale=full_scale,
            gain=gain,
            integration_ms=integration_ms,
        )
    raise ValueError(f"unknown sensor {kind!r}: use one of {', '.join(SENSOR_KINDS)}")
