"""DMX channel mapping and colour calibration: pure, no sockets."""

from __future__ import annotations

import pytest

from devices.colour import (
    Correction,
    dimmed,
    drive_levels,
    hex_to_rgb,
    to_byte,
    with_white,
)
from devices.dmx import SLOTS, Head, Layout, channel_values, check_address, check_overlaps, render
from devices.dmx_fixture import DmxFixture
from devices.dmx_output import MemoryDmxOutput
from devices.protocol import LightState

UN_BLUE = LightState(on=True, color="#009EDB", level=80)
# many LEDs show UN blue as cyan: their green is too strong; this tames it
TAME_GREEN = Correction.from_gains(1.0, 0.62, 1.0)


def test_rgb_is_the_colour_times_the_level() -> None:
    # 0x9E * 0.8 = 126.4, 0xDB * 0.8 = 175.2
    assert channel_values(UN_BLUE, Layout.RGB) == (0, 126, 175)
    full = LightState(on=True, color="#FF8000", level=100)
    assert channel_values(full, Layout.RGB) == (255, 128, 0)


def test_drgb_puts_the_level_on_the_dimmer_and_keeps_the_colour_full() -> None:
    assert channel_values(UN_BLUE, Layout.DRGB) == (204, 0, 0x9E, 0xDB)


def test_rgbw_moves_the_grey_part_to_white() -> None:
    pale = LightState(on=True, color="#80A0FF", level=100)
    assert channel_values(pale, Layout.RGBW) == (0, 32, 127, 128)
    assert channel_values(pale, Layout.RGBWA) == (0, 32, 127, 128, 0)
    white = LightState(on=True, color="#FFFFFF", level=50)
    assert channel_values(white, Layout.RGBW) == (0, 0, 0, 128)


def test_off_is_every_channel_at_zero_whatever_the_colour() -> None:
    off = LightState(on=False, color="#FFFFFF", level=100)
    for layout in Layout:
        assert channel_values(off, layout) == (0,) * layout.width
    dark = LightState(on=True, color="#FFFFFF", level=0)
    assert channel_values(dark, Layout.RGB) == (0, 0, 0)
    assert channel_values(dark, Layout.DRGB) == (0, 255, 255, 255)


def test_gains_calibrate_the_colour_before_the_level() -> None:
    # green 0x9E = 158 * 0.62 = 97.96 at full level; 78.4 at 80 %
    assert channel_values(UN_BLUE, Layout.RGB, TAME_GREEN) == (0, 78, 175)
    assert channel_values(UN_BLUE, Layout.DRGB, TAME_GREEN) == (204, 0, 98, 219)


def test_a_matrix_mixes_channels_and_is_clipped() -> None:
    # the blue emitter leaks into green: take 20 % of blue off green
    crosstalk = Correction(((1.0, 0.0, 0.0), (0.0, 1.0, -0.2), (0.0, 0.0, 1.0)))
    full = LightState(on=True, color="#009EDB", level=100)
    # green: 158/255 - 0.2 * 219/255 = 0.4478 -> 114
    assert channel_values(full, Layout.RGB, crosstalk) == (0, 114, 219)
    boost = Correction(((2.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -3.0, 1.0)))
    assert boost.apply(drive_levels(hex_to_rgb("#C0C0C0"))) == (1.0, 192 / 255, 0.0)


def test_corrections_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="gain"):
        Correction.from_gains(1.0, -0.1, 1.0)
    with pytest.raises(ValueError, match="gain"):
        Correction.from_gains(1.0, float("nan"), 1.0)
    with pytest.raises(ValueError, match="coefficient"):
        Correction(((1.0, 0.0, 0.0), (0.0, 5.0, 0.0), (0.0, 0.0, 1.0)))
    assert Correction().is_identity and not TAME_GREEN.is_identity


def test_drive_helpers() -> None:
    assert drive_levels(hex_to_rgb("#FF0080")) == (1.0, 0.0, 128 / 255)
    assert dimmed((1.0, 0.5, 0.0), 50) == (0.5, 0.25, 0.0)
    assert dimmed((1.0,), 150) == (1.0,)
    assert with_white((0.5, 0.75, 1.0)) == (0.0, 0.25, 0.5, 0.5)
    assert [to_byte(x) for x in (0.0, 0.5, 1.0, 1.2, -1.0)] == [0, 128, 255, 255, 0]


@pytest.mark.parametrize(
    ("address", "layout", "fits"),
    [
        (1, Layout.RGB, True),
        (510, Layout.RGB, True),
        (511, Layout.RGB, False),
        (509, Layout.RGBW, True),
        (510, Layout.RGBW, False),
        (508, Layout.RGBWA, True),
        (509, Layout.RGBWA, False),
        (0, Layout.RGB, False),
        (513, Layout.RGB, False),
    ],
)
def test_a_fixture_must_fit_in_its_universe(address: int, layout: Layout, fits: bool) -> None:
    if fits:
        assert check_address(address, layout) == address
    else:
        with pytest.raises(ValueError, match="address"):
            check_address(address, layout)


def test_heads_may_not_share_slots() -> None:
    check_overlaps([Head(1, 1, Layout.RGB), Head(1, 4, Layout.RGB), Head(2, 1, Layout.RGB)])
    with pytest.raises(ValueError, match="share slot 4"):
        check_overlaps([Head(1, 1, Layout.RGBW, name="a"), Head(1, 4, Layout.RGB, name="b")])


def test_render_puts_every_head_at_its_address_and_keeps_other_slots() -> None:
    heads = [
        Head(1, 10, Layout.DRGB, TAME_GREEN),
        Head(1, 20, Layout.RGB),
        Head(3, 508, Layout.RGBWA),
    ]
    base = {1: bytes([9]) * SLOTS}
    frames = render(heads, UN_BLUE, base)
    assert set(frames) == {1, 3}
    one = frames[1]
    assert len(one) == SLOTS
    assert one[9:13] == bytes([204, 0, 98, 219])  # slots 10-13
    assert one[19:22] == bytes([0, 126, 175])  # slots 20-22
    assert one[8] == 9 and one[13] == 9 and one[22] == 9  # untouched slots kept
    assert frames[3][507:512] == bytes([0, 126, 175, 0, 0])


def test_dmx_fixture_sends_every_universe_at_once_and_reports_what_it_shows() -> None:
    output = MemoryDmxOutput()
    fixture = DmxFixture([Head(1, 1, Layout.RGB), Head(2, 5, Layout.DRGB)], output)
    assert not output.running  # nothing is sent before the first step
    shown = fixture.apply(UN_BLUE.model_copy(update={"transition_s": 3}))
    assert shown.matches(UN_BLUE) and shown.transition_s == 0
    assert fixture.current == shown
    assert output.history == [fixture.frames]
    assert output.frames[1][:3] == bytes([0, 126, 175])
    assert output.frames[2][4:8] == bytes([204, 0, 158, 219])
    fixture.apply(LightState(on=False))
    assert output.frames[1][:3] == bytes(3) and output.frames[2][4:8] == bytes(4)
    fixture.close()
    fixture.close()
    assert not output.running
    with pytest.raises(RuntimeError, match="closed"):
        fixture.apply(UN_BLUE)


def test_dmx_fixture_refuses_universes_its_output_cannot_carry() -> None:
    with pytest.raises(ValueError, match="universes run 1-63999"):
        DmxFixture([Head(0, 1)], MemoryDmxOutput(range(1, 64000)))
    with pytest.raises(ValueError, match="at least one head"):
        DmxFixture([], MemoryDmxOutput())
