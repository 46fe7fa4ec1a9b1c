"""Colour encodings and brightness scales, and whether a reported colour matches a target.

Pure: no I/O. Each lighting vendor encodes a colour its own way, and this module holds the
conversions in one place:

- hex text (`#RRGGBB`) and 8-bit RGB;
- HSV (hue in degrees 0-360, saturation and value in percent), which Tasmota calls HSB;
- CIE 1931 xy chromaticity, which Zigbee lights (and Zigbee2MQTT) use;
- brightness scales: 0-255 (WLED, Home Assistant), 0-254 (Zigbee), 0-100 (Tasmota's
  Dimmer, Shelly's gain) and 1-100 (Shelly Gen2 brightness);
- drive levels (each emitter 0.0-1.0) for fixtures driven channel by channel (DMX): a
  fixture's colour `Correction` (a 3x3 matrix, or gains per channel), the level applied,
  and the white taken out of red, green and blue for RGBW fixtures.

A colour and a brightness are two things. `chroma` is what hue a light shows, the
brightest channel scaled to 255; `value_percent` is how bright the colour itself is.
Devices that keep only the chroma (Zigbee xy, Tasmota HSB, ESPHome) are sent the chroma
and the brightness times the colour's own value; devices that multiply RGB by a
brightness (WLED, Shelly) are sent both as they are. Either way the light shows the same
output: the colour times the level.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

_HEX_RE = re.compile(r"^#?([0-9A-Fa-f]{6})$")


class RGB(NamedTuple):
    """8-bit red, green and blue, each 0-255."""

    r: int
    g: int
    b: int


class HSV(NamedTuple):
    """Hue in degrees [0, 360), saturation and value in percent [0, 100]."""

    h: float
    s: float
    v: float


class XY(NamedTuple):
    """CIE 1931 chromaticity."""

    x: float
    y: float


Colour = RGB | HSV | XY
"""A colour as one device encoding carries it."""


def _check_channel(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"colour channel {value!r} is not an integer 0-255")
    return value


def rgb(r: int, g: int, b: int) -> RGB:
    """An RGB, each channel checked to be an integer 0-255."""
    return RGB(_check_channel(r), _check_channel(g), _check_channel(b))


# ---- hex --------------------------------------------------------------------------------


def hex_to_rgb(text: str) -> RGB:
    """`#RRGGBB` (the `#` optional, either case) to RGB. Raises ValueError otherwise."""
    match = _HEX_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"colour {text!r} is not #RRGGBB")
    value = int(match.group(1), 16)
    return RGB((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)


def rgb_to_hex(colour: RGB) -> str:
    """RGB to `#RRGGBB`, upper case (the form LightState uses)."""
    r, g, b = (_check_channel(c) for c in colour)
    return f"#{r:02X}{g:02X}{b:02X}"


# ---- HSV / HSB --------------------------------------------------------------------------


def rgb_to_hsv(colour: RGB) -> HSV:
    """The standard hexcone model (Smith, "Color Gamut Transform Pairs", SIGGRAPH 1978)."""
    r, g, b = (c / 255 for c in colour)
    high, low = max(r, g, b), min(r, g, b)
    delta = high - low
    if delta == 0:
        hue = 0.0
    elif high == r:
        hue = 60 * (((g - b) / delta) % 6)
    elif high == g:
        hue = 60 * ((b - r) / delta + 2)
    else:
        hue = 60 * ((r - g) / delta + 4)
    saturation = 0.0 if high == 0 else delta / high
    return HSV(hue % 360, saturation * 100, high * 100)


def hsv_to_rgb(colour: HSV) -> RGB:
    """The inverse of `rgb_to_hsv`, rounded to 8 bits."""
    h, s, v = colour
    if not (math.isfinite(h) and 0 <= s <= 100 and 0 <= v <= 100):
        raise ValueError(f"HSV {tuple(colour)!r} is out of range")
    h, s, v = h % 360, s / 100, v / 100
    c = v * s
    x = c * (1 - abs((h / 60) % 2 - 1))
    m = v - c
    sector = int(h // 60)
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return RGB(*(_round((channel + m) * 255) for channel in (r, g, b)))


# ---- CIE xy -----------------------------------------------------------------------------
# sRGB to CIE XYZ, D65 white point: IEC 61966-2-1:1999 (sRGB), the companding and the
# matrix as given there (also in Bruce Lindbloom's "RGB/XYZ Matrices" and in the Philips
# Hue developer note "RGB to xy Color conversion"). x = X/(X+Y+Z), y = Y/(X+Y+Z).
_RGB_TO_XYZ = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9505),
)
_XYZ_TO_RGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)
D65 = XY(0.3127, 0.3290)
"""The sRGB white point, as xy."""


def _linear(channel: float) -> float:
    """sRGB companding undone (IEC 61966-2-1, section 5.2)."""
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _companded(channel: float) -> float:
    return 12.92 * channel if channel <= 0.0031308 else 1.055 * channel ** (1 / 2.4) - 0.055


def rgb_to_xy(colour: RGB) -> XY:
    """The chromaticity of an sRGB colour. Black has none: it gives the white point."""
    lin = [_linear(c / 255) for c in colour]
    x_, y_, z_ = (sum(m * c for m, c in zip(row, lin, strict=True)) for row in _RGB_TO_XYZ)
    total = x_ + y_ + z_
    if total == 0:
        return D65
    return XY(x_ / total, y_ / total)


def xy_to_rgb(colour: XY) -> RGB:
    """The sRGB chroma (brightest channel 255) of a chromaticity.

    Colours outside the sRGB gamut are clipped: negative channels become 0.
    """
    x, y = colour
    if not (math.isfinite(x) and math.isfinite(y)) or y <= 0 or x < 0 or x + y > 1:
        raise ValueError(f"xy {tuple(colour)!r} is not a chromaticity")
    xyz = (x / y, 1.0, (1 - x - y) / y)
    lin = [max(0.0, sum(m * c for m, c in zip(row, xyz, strict=True))) for row in _XYZ_TO_RGB]
    top = max(lin)
    return RGB(*(_round(_companded(c / top) * 255) for c in lin))


# ---- chroma and value -------------------------------------------------------------------


def value_percent(colour: RGB) -> float:
    """How bright the colour itself is: its brightest channel, in percent of 255."""
    return max(colour) / 255 * 100


def chroma(colour: RGB) -> RGB:
    """The colour with its brightest channel raised to 255 (black stays black)."""
    top = max(colour)
    if top == 0:
        return RGB(0, 0, 0)
    return RGB(*(_round(c * 255 / top) for c in colour))


def _round(value: float) -> int:
    """Round half up (Python's round() goes to even), clamped to 0-255."""
    return min(255, max(0, math.floor(value + 0.5)))


# ---- brightness scales ------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """A device's brightness range. `to_device` maps a percentage onto it, rounding half up.

    `lit=True` keeps a light that should be on at least at the lowest lit step (a
    brightness of 0 is off on most devices).
    """

    name: str
    low: int
    high: int

    def to_device(self, percent: float, *, lit: bool = False) -> int:
        if not math.isfinite(percent):
            raise ValueError(f"brightness {percent!r} is not a number")
        value = math.floor(min(100.0, max(0.0, percent)) / 100 * self.high + 0.5)
        floor = max(self.low, 1) if lit else self.low
        return min(self.high, max(floor, value))

    def to_percent(self, value: float) -> float:
        """A device value as a percentage. Raises ValueError outside the range."""
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise ValueError(f"brightness {value!r} is outside {self.low}-{self.high}")
        return value / self.high * 100

    @property
    def step_percent(self) -> float:
        """One step of the device's scale, in percent."""
        return 100 / self.high


BYTE = Scale("0-255", 0, 255)
ZIGBEE = Scale("0-254", 0, 254)
PERCENT = Scale("0-100", 0, 100)
PERCENT_FROM_1 = Scale("1-100", 1, 100)


# ---- does a reported colour match the target? -------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How far a reported colour may be from the target and still count as it.

    - `rgb`: per channel on the chroma (0-255). An echo of an RGB command is exact;
      the slack covers 8-bit rounding.
    - `xy`: distance in CIE xy. Zigbee lights report xy in 1/65535 steps and clip it to
      their own gamut: a Philips "gamut C" blue sits about 0.013 from sRGB blue. Blue,
      cyan, green and white are all more than 0.05 apart.
    - `hue` (degrees) and `saturation` (points): Tasmota's HSBColor is in whole degrees
      and percent. Hue is not compared when both saturations are under `grey_below`.
    - `level`: points of the effective brightness (colour value times brightness).
    - `white`: the most a white channel may carry when the target has none.
    """

    rgb: int = 3
    xy: float = 0.02
    hue: float = 4.0
    saturation: float = 4.0
    grey_below: float = 8.0
    level: float = 1.5
    white: int = 3


DEFAULT_TOLERANCE = Tolerance()


def hue_distance(a: float, b: float) -> float:
    """Degrees between two hues, the short way round the circle."""
    d = abs(a - b) % 360
    return min(d, 360 - d)


def colour_matches(reported: Colour, target: RGB, tolerance: Tolerance = DEFAULT_TOLERANCE) -> bool:
    """Whether `reported` shows the same hue as `target` (brightness is compared apart).

    The comparison is made in the reported colour's own encoding: RGB by chroma, xy by
    distance, HSV by hue and saturation. Black, reported or targeted, matches nothing.
    """
    if max(target) == 0:
        return False
    if isinstance(reported, XY):
        want = rgb_to_xy(target)
        return math.dist(reported, want) <= tolerance.xy
    if isinstance(reported, HSV):
        want_hsv = rgb_to_hsv(target)
        if abs(reported.s - want_hsv.s) > tolerance.saturation:
            return False
        if reported.s < tolerance.grey_below and want_hsv.s < tolerance.grey_below:
            return True
        return hue_distance(reported.h, want_hsv.h) <= tolerance.hue
    if max(reported) == 0:
        return False
    got, want_rgb = chroma(reported), chroma(target)
    return all(abs(a - b) <= tolerance.rgb for a, b in zip(got, want_rgb, strict=True))


def intensity_percent(colour: Colour, brightness_percent: float) -> float:
    """The effective brightness: the brightness times the colour's own value.

    xy carries no value, and an HSV's value is taken as given.
    """
    if isinstance(colour, XY):
        return brightness_percent
    if isinstance(colour, HSV):
        return brightness_percent * colour.v / 100
    return brightness_percent * value_percent(colour) / 100


# ---- drive levels: what each emitter of a fixture is driven at -----------------------------
# A fixture driven channel by channel (DMX) takes one value per emitter. The colour's
# channels as fractions 0.0-1.0 are its drive levels; a `Correction` maps the requested
# colour onto what this fixture must be driven at to show it (many LEDs show UN blue
# #009EDB as cyan: their green is strong, so a gain below 1 on green brings the hue back).

Drive = tuple[float, ...]
"""Drive levels, one per emitter, each 0.0-1.0."""

Matrix = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]

IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
CORRECTION_LIMIT = 4.0
"""The largest magnitude a correction coefficient may have."""


@dataclass(frozen=True)
class Correction:
    """A fixture's colour calibration: out = matrix x (r, g, b), each result clipped to 0-1.

    Row i gives output channel i (red, green, blue) as a mix of the requested red, green
    and blue. Gains per channel are the diagonal matrix (`Correction.from_gains`).
    """

    matrix: Matrix = IDENTITY

    def __post_init__(self) -> None:
        rows = self.matrix
        if len(rows) != 3 or any(len(row) != 3 for row in rows):
            raise ValueError("a colour correction matrix has 3 rows of 3 numbers")
        for row in rows:
            for value in row:
                if not math.isfinite(value) or abs(value) > CORRECTION_LIMIT:
                    raise ValueError(
                        f"correction coefficient {value!r} is outside "
                        f"-{CORRECTION_LIMIT:g} to {CORRECTION_LIMIT:g}"
                    )

    @classmethod
    def from_gains(cls, red: float, green: float, blue: float) -> Correction:
        """Each channel scaled by its own gain (0 to 4), no mixing between channels."""
        for gain in (red, green, blue):
            if not math.isfinite(gain) or not 0 <= gain <= CORRECTION_LIMIT:
                raise ValueError(f"gain {gain!r} is outside 0 to {CORRECTION_LIMIT:g}")
        return cls(((red, 0.0, 0.0), (0.0, green, 0.0), (0.0, 0.0, blue)))

    @property
    def is_identity(self) -> bool:
        return self.matrix == IDENTITY

    def apply(self, drive: Drive) -> Drive:
        """The corrected red, green and blue drive levels of a requested (r, g, b)."""
        if len(drive) != 3:
            raise ValueError("a correction applies to red, green and blue")
        return tuple(
            min(1.0, max(0.0, sum(m * c for m, c in zip(row, drive, strict=True))))
            for row in self.matrix
        )


NO_CORRECTION = Correction()


def drive_levels(colour: RGB) -> Drive:
    """An 8-bit colour as drive levels 0.0-1.0."""
    return tuple(_check_channel(c) / 255 for c in colour)


def dimmed(drive: Drive, percent: float) -> Drive:
    """Drive levels times a brightness in percent (clamped to 0-100)."""
    if not math.isfinite(percent):
        raise ValueError(f"brightness {percent!r} is not a number")
    factor = min(100.0, max(0.0, percent)) / 100
    return tuple(level * factor for level in drive)


def with_white(drive: Drive) -> Drive:
    """(r, g, b) to (r, g, b, w) for an RGBW emitter: the grey part of the colour moves to
    white (w = min(r, g, b)), which is brighter and whiter than mixing it from R, G and B."""
    if len(drive) != 3:
        raise ValueError("white is taken out of red, green and blue")
    white = min(drive)
    return (*(level - white for level in drive), white)


def to_byte(level: float) -> int:
    """A drive level 0.0-1.0 as a DMX value 0-255, rounding half up."""
    if not math.isfinite(level):
        raise ValueError(f"drive level {level!r} is not a number")
    return _round(level * 255)
