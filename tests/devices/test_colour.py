"""devices.colour against published values: sRGB primaries, HSV of named colours, scales."""

from __future__ import annotations

import math

import pytest

from devices.colour import (
    BYTE,
    D65,
    HSV,
    PERCENT,
    PERCENT_FROM_1,
    RGB,
    XY,
    ZIGBEE,
    chroma,
    colour_matches,
    hex_to_rgb,
    hsv_to_rgb,
    hue_distance,
    intensity_percent,
    rgb,
    rgb_to_hex,
    rgb_to_hsv,
    rgb_to_xy,
    value_percent,
    xy_to_rgb,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#009EDB", RGB(0, 158, 219)),  # UN blue (Pantone 2925)
        ("#009edb", RGB(0, 158, 219)),
        ("009EDB", RGB(0, 158, 219)),
        ("#000000", RGB(0, 0, 0)),
        ("#FFFFFF", RGB(255, 255, 255)),
    ],
)
def test_hex_to_rgb(text: str, expected: RGB) -> None:
    assert hex_to_rgb(text) == expected


@pytest.mark.parametrize("bad", ["#09EDB", "#009EDBX", "blue", "", "#GG0000", "#009EDB00"])
def test_hex_to_rgb_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not #RRGGBB"):
        hex_to_rgb(bad)


def test_rgb_to_hex_round_trip_and_upper_case() -> None:
    assert rgb_to_hex(RGB(0, 158, 219)) == "#009EDB"
    assert rgb_to_hex(hex_to_rgb("#0a0b0c")) == "#0A0B0C"
    with pytest.raises(ValueError, match="0-255"):
        rgb_to_hex(RGB(256, 0, 0))
    with pytest.raises(ValueError, match="0-255"):
        rgb(0, True, 0)  # type: ignore[arg-type]


# Hexcone HSV (Smith 1978), as every colour picker shows them.
@pytest.mark.parametrize(
    ("colour", "hsv"),
    [
        (RGB(255, 0, 0), HSV(0, 100, 100)),
        (RGB(0, 255, 0), HSV(120, 100, 100)),
        (RGB(0, 0, 255), HSV(240, 100, 100)),
        (RGB(255, 255, 0), HSV(60, 100, 100)),
        (RGB(255, 0, 255), HSV(300, 100, 100)),
        (RGB(128, 128, 128), HSV(0, 0, 50.196)),
        (RGB(0, 0, 0), HSV(0, 0, 0)),
        (RGB(0, 158, 219), HSV(196.712, 100, 85.882)),
        (RGB(0, 0, 204), HSV(240, 100, 80)),
    ],
)
def test_rgb_to_hsv_known_values(colour: RGB, hsv: HSV) -> None:
    got = rgb_to_hsv(colour)
    assert got == pytest.approx(hsv, abs=1e-3)
    assert hsv_to_rgb(got) == colour


def test_hsv_to_rgb_tasmota_hsbcolor() -> None:
    # Tasmota's HSBColor 240,100,80 is Color 0000CC.
    assert hsv_to_rgb(HSV(240, 100, 80)) == RGB(0, 0, 204)
    assert hsv_to_rgb(HSV(360, 100, 100)) == RGB(255, 0, 0)
    with pytest.raises(ValueError, match="out of range"):
        hsv_to_rgb(HSV(0, 101, 50))


# The sRGB primaries and white point: IEC 61966-2-1 / ITU-R BT.709.
@pytest.mark.parametrize(
    ("colour", "xy"),
    [
        (RGB(255, 0, 0), XY(0.6400, 0.3300)),
        (RGB(0, 255, 0), XY(0.3000, 0.6000)),
        (RGB(0, 0, 255), XY(0.1500, 0.0600)),
        (RGB(255, 255, 255), XY(0.3127, 0.3290)),
        (RGB(128, 128, 128), XY(0.3127, 0.3290)),
    ],
)
def test_rgb_to_xy_srgb_primaries(colour: RGB, xy: XY) -> None:
    assert rgb_to_xy(colour) == pytest.approx(xy, abs=2e-4)


def test_xy_of_black_is_the_white_point_and_brightness_does_not_change_xy() -> None:
    assert rgb_to_xy(RGB(0, 0, 0)) == D65
    assert rgb_to_xy(RGB(0, 0, 204)) == pytest.approx(rgb_to_xy(RGB(0, 0, 255)), abs=1e-9)
    # UN blue, worked by hand from the IEC 61966-2-1 companding and matrix.
    assert rgb_to_xy(hex_to_rgb("#009EDB")) == pytest.approx((0.1985, 0.2347), abs=5e-4)


@pytest.mark.parametrize(
    "colour", [RGB(255, 0, 0), RGB(0, 255, 0), RGB(0, 0, 255), RGB(0, 184, 255), RGB(255, 128, 0)]
)
def test_xy_to_rgb_round_trips_chroma(colour: RGB) -> None:
    back = xy_to_rgb(rgb_to_xy(colour))
    assert max(abs(a - b) for a, b in zip(back, colour, strict=True)) <= 1


def test_xy_to_rgb_clips_outside_srgb_and_refuses_non_chromaticities() -> None:
    # Zigbee gamut C green (0.17, 0.7) lies outside sRGB: clipped to pure-ish green.
    r, g, _ = xy_to_rgb(XY(0.17, 0.7))
    assert g == 255 and r == 0
    for bad in (XY(0.5, 0.0), XY(0.7, 0.5), XY(math.nan, 0.3), XY(-0.1, 0.3)):
        with pytest.raises(ValueError, match="not a chromaticity"):
            xy_to_rgb(bad)


def test_chroma_and_value() -> None:
    assert chroma(RGB(0, 158, 219)) == RGB(0, 184, 255)
    assert chroma(RGB(0, 0, 204)) == RGB(0, 0, 255)
    assert chroma(RGB(0, 0, 0)) == RGB(0, 0, 0)
    assert value_percent(RGB(0, 0, 204)) == pytest.approx(80)


@pytest.mark.parametrize(
    ("scale", "percent", "value"),
    [
        (BYTE, 80, 204),
        (BYTE, 100, 255),
        (BYTE, 0, 0),
        (BYTE, 50, 128),  # 127.5 rounds half up
        (BYTE, 0.1, 0),
        (ZIGBEE, 80, 203),
        (ZIGBEE, 100, 254),
        (ZIGBEE, 50, 127),
        (ZIGBEE, 0, 0),
        (PERCENT, 80, 80),
        (PERCENT, 0.4, 0),
        (PERCENT, 100, 100),
        (PERCENT_FROM_1, 0, 1),  # Shelly Gen2 has no brightness 0
        (PERCENT_FROM_1, 100, 100),
        (BYTE, 150, 255),  # clamped
        (BYTE, -5, 0),
    ],
)
def test_scale_to_device(scale, percent: float, value: int) -> None:
    assert scale.to_device(percent) == value


@pytest.mark.parametrize(("scale", "lowest"), [(BYTE, 1), (ZIGBEE, 1), (PERCENT, 1)])
def test_lit_never_rounds_to_zero(scale, lowest: int) -> None:
    assert scale.to_device(0.1, lit=True) == lowest
    assert scale.to_device(100, lit=True) == scale.high


@pytest.mark.parametrize(
    ("scale", "value", "percent"),
    [(BYTE, 255, 100), (BYTE, 204, 80), (ZIGBEE, 254, 100), (ZIGBEE, 127, 50), (PERCENT, 80, 80)],
)
def test_scale_to_percent(scale, value: int, percent: float) -> None:
    assert scale.to_percent(value) == pytest.approx(percent, abs=0.01)


@pytest.mark.parametrize(
    ("scale", "value"), [(BYTE, 256), (ZIGBEE, 255), (PERCENT, 101), (PERCENT_FROM_1, 0)]
)
def test_scale_to_percent_refuses_out_of_range(scale, value: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        scale.to_percent(value)


def test_scale_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not a number"):
        BYTE.to_device(math.nan)
    with pytest.raises(ValueError, match="outside"):
        BYTE.to_percent(math.inf)


BLUE = RGB(0, 0, 255)
UN_BLUE = hex_to_rgb("#009EDB")


@pytest.mark.parametrize(
    ("reported", "target", "matches"),
    [
        (RGB(0, 0, 255), BLUE, True),
        (RGB(0, 0, 204), BLUE, True),  # same hue, dimmer: brightness is compared apart
        (RGB(0, 2, 253), BLUE, True),
        (RGB(0, 255, 0), BLUE, False),
        (RGB(0, 255, 255), UN_BLUE, False),  # cyan is not UN blue
        (RGB(0, 184, 255), UN_BLUE, True),
        (RGB(0, 0, 0), BLUE, False),
        (RGB(0, 0, 255), RGB(0, 0, 0), False),
        (XY(0.15, 0.06), BLUE, True),
        (XY(0.1532, 0.0475), BLUE, True),  # gamut C clip
        (XY(0.17, 0.7), BLUE, False),
        (XY(0.3127, 0.329), BLUE, False),  # white
        (XY(0.1985, 0.2347), UN_BLUE, True),
        (XY(0.2247, 0.3287), UN_BLUE, False),  # sRGB cyan
        (HSV(240, 100, 100), BLUE, True),
        (HSV(237, 98, 100), BLUE, True),
        (HSV(120, 100, 100), BLUE, False),
        (HSV(240, 50, 100), BLUE, False),
        (HSV(197, 100, 100), UN_BLUE, True),
        (HSV(0, 2, 100), RGB(255, 255, 255), True),  # grey: the hue does not matter
        (HSV(200, 3, 100), RGB(250, 250, 250), True),
    ],
)
def test_colour_matches_per_encoding(reported, target: RGB, matches: bool) -> None:
    assert colour_matches(reported, target) is matches


def test_hue_distance_wraps() -> None:
    assert hue_distance(359, 1) == 2
    assert hue_distance(10, 350) == 20
    assert hue_distance(0, 180) == 180


def test_intensity_percent() -> None:
    assert intensity_percent(RGB(0, 158, 219), 100) == pytest.approx(85.88, abs=0.01)
    assert intensity_percent(XY(0.15, 0.06), 80) == 80
    assert intensity_percent(HSV(240, 100, 50), 80) == 40
