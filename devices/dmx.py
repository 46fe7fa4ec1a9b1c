"""DMX channel mapping: what slots a fixture takes and the values a `LightState` gives them.

Pure: no I/O. A DMX universe has 512 slots, numbered 1-512. A fixture (a *head*) takes
consecutive slots from its start address, one per channel of its layout:

- `rgb`:   red, green, blue;
- `drgb`:  dimmer, red, green, blue (the dimmer carries the level, the colour stays full);
- `rgbw`:  red, green, blue, white (the grey part of the colour goes to white);
- `rgbwa`: red, green, blue, white, amber (amber is held at 0).

The colour goes through the head's `Correction` (devices.colour) before the level and the
white are applied, so a calibration says how to show a colour, whatever its brightness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from devices.colour import (
    NO_CORRECTION,
    Correction,
    dimmed,
    drive_levels,
    hex_to_rgb,
    to_byte,
    with_white,
)
from devices.protocol import LightState

SLOTS = 512
"""Slots in a DMX universe."""


class Layout(StrEnum):
    """The channels of a fixture, in slot order from its start address."""

    RGB = "rgb"
    DRGB = "drgb"
    RGBW = "rgbw"
    RGBWA = "rgbwa"

    @property
    def channels(self) -> tuple[str, ...]:
        return _CHANNELS[self]

    @property
    def width(self) -> int:
        """How many slots the layout takes."""
        return len(_CHANNELS[self])


_CHANNELS: dict[Layout, tuple[str, ...]] = {
    Layout.RGB: ("red", "green", "blue"),
    Layout.DRGB: ("dimmer", "red", "green", "blue"),
    Layout.RGBW: ("red", "green", "blue", "white"),
    Layout.RGBWA: ("red", "green", "blue", "white", "amber"),
}


def check_address(address: int, layout: Layout) -> int:
    """`address` if a fixture of `layout` fits there in a universe; ValueError otherwise."""
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= SLOTS:
        raise ValueError(f"DMX address {address!r} is outside 1-{SLOTS}")
    last = address + layout.width - 1
    if last > SLOTS:
        raise ValueError(
            f"the {layout.value} layout at address {address} needs slots {address}-{last}; "
            f"a universe has {SLOTS} (the highest address for {layout.value} is "
            f"{SLOTS - layout.width + 1})"
        )
    return address


def channel_values(
    state: LightState, layout: Layout, correction: Correction = NO_CORRECTION
) -> tuple[int, ...]:
    """The DMX values (0-255, one per channel of `layout`) that show `state`.

    Off is every channel at 0, whatever the colour.
    """
    if not state.on:
        return (0,) * layout.width
    colour = correction.apply(drive_levels(hex_to_rgb(state.color)))
    if layout is Layout.DRGB:
        return (to_byte(state.level / 100), *(to_byte(c) for c in colour))
    lit = dimmed(colour, state.level)
    if layout is Layout.RGB:
        return tuple(to_byte(c) for c in lit)
    values = tuple(to_byte(c) for c in with_white(lit))
    if layout is Layout.RGBWA:
        return (*values, 0)
    return values


@dataclass(frozen=True)
class Head:
    """One fixture on a universe: where it starts, its layout and its calibration."""

    universe: int
    address: int
    layout: Layout = Layout.RGB
    correction: Correction = field(default=NO_CORRECTION)
    name: str = ""

    def __post_init__(self) -> None:
        check_address(self.address, self.layout)

    @property
    def slots(self) -> range:
        """The slots (1-512) the head takes."""
        return range(self.address, self.address + self.layout.width)

    def label(self) -> str:
        where = f"universe {self.universe} address {self.address}"
        return f"{self.name} ({where})" if self.name else where


def check_overlaps(heads: Iterable[Head]) -> None:
    """ValueError naming the first two heads that share a slot of a universe."""
    taken: dict[tuple[int, int], Head] = {}
    for head in heads:
        for slot in head.slots:
            other = taken.get((head.universe, slot))
            if other is not None:
                raise ValueError(
                    f"{head.label()} and {other.label()} share slot {slot} of universe "
                    f"{head.universe}"
                )
            taken[(head.universe, slot)] = head


def render(
    heads: Iterable[Head], state: LightState, base: Mapping[int, bytes] | None = None
) -> dict[int, bytes]:
    """Every universe the heads use, as 512 slot values, with every head showing `state`.

    Slots no head takes keep their value in `base` (0 where `base` has no frame).
    """
    frames: dict[int, bytearray] = {}
    for head in heads:
        frame = frames.get(head.universe)
        if frame is None:
            previous = (base or {}).get(head.universe, bytes(SLOTS))
            frame = frames[head.universe] = bytearray(previous)
        values = channel_values(state, head.layout, head.correction)
        frame[head.address - 1 : head.address - 1 + len(values)] = bytes(values)
    return {universe: bytes(frame) for universe, frame in frames.items()}
