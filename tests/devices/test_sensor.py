"""The light sensor: the simulated one, the TCS34725 driver on a bus that replays register
bytes, and the agent that reads it after each step (on a FakeClock, no network)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices.clock import FakeClock
from devices.fixture import SimulatedFixture
from devices.native import NativeDevice
from devices.protocol import (
    Ack,
    LightState,
    Plan,
    PlanStep,
    ProtocolError,
    Reading,
    Stage,
    Topics,
    decode,
    encode,
)
from devices.sensor import SimulatedSensor, effective_level, open_sensor
from devices.sensor_tcs34725 import (
    ADDRESS,
    AEN,
    ATIME,
    AUTO_INCREMENT,
    CDATAL,
    COMMAND,
    CONTROL,
    ENABLE,
    ID,
    PON,
    STATUS,
    Conversion,
    Counts,
    Tcs34725,
    atime_for,
)
from devices.timers import TimerHeap

START = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#009EDB", level=80)
FULL_BLUE = LightState(on=True, color="#0000FF", level=100)
OFF = LightState(on=False)

# ---- the simulated sensor -------------------------------------------------------------


def test_the_simulated_sensor_sees_the_chroma_and_the_effective_level() -> None:
    reading = SimulatedSensor().read(BLUE)
    assert reading.color == "#00B8FF"  # #009EDB with its brightest channel at FF
    assert reading.level == pytest.approx(80 * 0xDB / 255, abs=0.01)
    assert reading.sensor == "sim"
    assert SimulatedSensor().read(OFF) == Reading(color="#000000", level=0, sensor="sim")
    assert SimulatedSensor().read(LightState(on=True, color="#000000", level=90)).level == 0


def test_the_wrong_colour_knob_keeps_the_level_and_changes_the_colour() -> None:
    sensor = SimulatedSensor(wrong_colour="#ff0000")
    reading = sensor.read(BLUE)
    assert (reading.color, reading.level) == ("#FF0000", pytest.approx(68.71, abs=0.01))
    assert sensor.read(OFF).color == "#000000"  # off is dark whatever it would see


def test_effective_level_is_the_level_times_the_colours_own_value() -> None:
    assert effective_level(FULL_BLUE) == 100
    assert effective_level(LightState(on=True, color="#000080", level=100)) == pytest.approx(
        50.2, abs=0.01
    )
    assert effective_level(OFF) == 0


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("sim", {"wrong_colour": "blue"}, "not #RRGGBB"),
        ("sim", {"wrong_colour": "#000000"}, "must not be black"),
        ("none", {"wrong_colour": "#FF0000"}, "needs --sensor sim"),
        ("tcs34725", {"wrong_colour": "#FF0000"}, "simulated sensor only"),
        ("tcs34725", {}, "--sensor-full-scale"),
        ("nonsense", {}, "unknown sensor"),
    ],
)
def test_bad_sensor_settings_are_refused_clearly(
    kind: str, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        open_sensor(kind, **extra)  # type: ignore[arg-type]


def test_no_sensor_is_none_and_sim_is_simulated() -> None:
    assert open_sensor("none") is None
    assert isinstance(open_sensor("sim", wrong_colour="#00FF00"), SimulatedSensor)


# ---- the TCS34725 driver ----------------------------------------------------------------


def block(c: int, r: int, g: int, b: int) -> list[int]:
    """CDATAL..BDATAH as the chip sends them: each channel low byte first."""
    out: list[int] = []
    for value in (c, r, g, b):
        out += [value & 0xFF, value >> 8]
    return out


# Register blocks of the kind a TCS34725 returns at 153.6 ms and 4x gain, a few metres
# from a floodlit wall: a white wash at full output, a blue wash at full output and at
# half, a red one, and the wall unlit. Each colour channel also passes some infrared,
# which the clear channel sees once (so C < R + G + B).
WHITE = [0xE8, 0x80, 0xE0, 0x2E, 0xE0, 0x2E, 0xE0, 0x2E]  # C 33000, R = G = B 12000
BLUE_WASH = [0x38, 0x31, 0x84, 0x03, 0x08, 0x07, 0x04, 0x29]  # 12600, 900, 1800, 10500
HALF_BLUE = [0x9C, 0x18, 0xC2, 0x01, 0x84, 0x03, 0x82, 0x14]  # 6300, 450, 900, 5250
RED_WASH = [0x18, 0x2E, 0x80, 0x25, 0x78, 0x05, 0xB0, 0x04]  # 11800, 9600, 1400, 1200
UNLIT = [0x28, 0x00, 0x0E, 0x00, 0x10, 0x00, 0x0C, 0x00]  # 40, 14, 16, 12


def test_the_recorded_blocks_are_what_their_comments_say() -> None:
    assert Counts.from_block(WHITE) == Counts(33000, 12000, 12000, 12000)
    assert block(12600, 900, 1800, 10500) == BLUE_WASH
    assert block(11800, 9600, 1400, 1200) == RED_WASH
    assert block(40, 14, 16, 12) == UNLIT


class ReplayBus:
    """An smbus2.SMBus double: answers register reads from recorded bytes, keeps every
    write. `blocks` are the count blocks it hands out, one per read, in order."""

    def __init__(self, blocks: list[list[int]], chip_id: int = 0x44, status: int = 0x11) -> None:
        self.blocks = list(blocks)
        self.registers = {COMMAND | ID: chip_id, COMMAND | STATUS: status}
        self.writes: list[tuple[int, int, int]] = []
        self.closed = False

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        assert i2c_addr == ADDRESS
        return self.registers[register]

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        assert i2c_addr == ADDRESS
        self.writes.append((i2c_addr, register, value))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        assert (i2c_addr, register, length) == (ADDRESS, COMMAND | AUTO_INCREMENT | CDATAL, 8)
        return self.blocks.pop(0)

    def close(self) -> None:
        self.closed = True


def started(blocks: list[list[int]], **conversion: object) -> tuple[Tcs34725, ReplayBus]:
    bus = ReplayBus(blocks)
    sleeps: list[float] = []
    settings: dict[str, object] = {"full_scale": 12000.0, **conversion}
    sensor = Tcs34725(bus, Conversion(**settings), sleep=sleeps.append)  # type: ignore[arg-type]
    sensor.start()
    assert sleeps == [0.0024]  # PON, 2.4 ms, then AEN
    return sensor, bus


def test_start_sets_integration_and_gain_then_powers_on_and_enables() -> None:
    _, bus = started([], gain=16, integration_ms=50.4)
    assert bus.writes == [
        (ADDRESS, COMMAND | ATIME, 256 - 21),  # 21 cycles of 2.4 ms
        (ADDRESS, COMMAND | CONTROL, 0x02),  # 16x
        (ADDRESS, COMMAND | ENABLE, PON),
        (ADDRESS, COMMAND | ENABLE, PON | AEN),
    ]


def test_a_blue_wash_reads_blue_at_its_level() -> None:
    sensor, _ = started([BLUE_WASH, HALF_BLUE])
    full = sensor.read()
    assert full.sensor == "tcs34725"
    assert full.color == "#456BFF"
    assert full.level == 85.0  # 10200 of 12000 on the blue channel, infrared taken off
    assert full.counts is not None and (full.counts.c, full.counts.b) == (12600, 10500)
    half = sensor.read()
    assert (half.color, half.level) == ("#456BFF", 42.5)  # the same chroma, half the level


def test_white_red_and_an_unlit_wall() -> None:
    sensor, _ = started([WHITE, RED_WASH, UNLIT])
    white = sensor.read()
    assert (white.color, white.level) == ("#FFFFFF", 87.5)
    assert white.lux == pytest.approx((0.136 + 1 - 0.444) * 10500 / (153.6 * 4 / 310), abs=0.1)
    red = sensor.read()
    assert red.color == "#FF645C" and red.level == 78.3
    dark = sensor.read()
    assert (dark.color, dark.level) == ("#000000", 0.0)
    assert dark.counts is not None and dark.counts.c == 40  # the raw figures stay


def test_a_white_balance_corrects_the_channels() -> None:
    # the same white wash seen by a sensor whose blue channel reads 20% high
    # (infrared 1500 on each channel, as in WHITE: 10500, 10500 and 12900 without it)
    wash = block(12000 + 12000 + 14400 - 3000, 12000, 12000, 14400)
    unbalanced, _ = started([wash])
    assert unbalanced.read().color != "#FFFFFF"
    sensor, _ = started([wash], balance=(1.0, 1.0, 10500 / 12900))
    assert sensor.read().color == "#FFFFFF"


def test_a_chip_with_another_id_is_refused() -> None:
    bus = ReplayBus([], chip_id=0x10)
    with pytest.raises(OSError, match="no TCS34725 at I2C address 0x29"):
        Tcs34725(bus, Conversion(full_scale=1000)).start()
    assert bus.writes == []


def test_no_reading_before_an_integration_completed() -> None:
    sensor, bus = started([WHITE])
    bus.registers[COMMAND | STATUS] = 0x10
    with pytest.raises(OSError, match="not completed an integration"):
        sensor.read()


def test_a_short_block_is_an_error_not_a_reading() -> None:
    sensor, _ = started([[1, 2, 3]])
    with pytest.raises(OSError, match="3 bytes"):
        sensor.read()


def test_stop_powers_down_and_closes_the_bus() -> None:
    sensor, bus = started([])
    sensor.stop()
    assert bus.writes[-1] == (ADDRESS, COMMAND | ENABLE, 0) and bus.closed


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"full_scale": 0}, "full-scale"),
        ({"full_scale": 100, "gain": 8}, "gain 8"),
        ({"full_scale": 100, "integration_ms": 1000}, "integration time"),
        ({"full_scale": 100, "balance": (1, 0, 1)}, "white-balance"),
    ],
)
def test_bad_conversion_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conversion(**settings)  # type: ignore[arg-type]


def test_integration_times_and_the_saturation_count() -> None:
    assert atime_for(2.4) == 255 and atime_for(614.4) == 0
    assert Conversion(full_scale=1, integration_ms=24).max_count == 10 * 1024
    assert Conversion(full_scale=1).max_count == 65535
    assert Tcs34725(ReplayBus([]), Conversion(full_scale=1)).settle_s == pytest.approx(0.3572)


# ---- the protocol field -------------------------------------------------------------------


APPLIED = (
    '{"v":1,"version":3,"stage":"applied","step_at":"2026-07-30T19:00:00Z",'
    '"applied_at":"2026-07-30T19:00:00Z","state":{"on":true,"color":"#0000FF","level":80}'
)


def test_an_ack_without_a_reading_still_parses() -> None:
    assert decode(Ack, APPLIED + "}").reading is None


def test_a_reading_round_trips_and_is_checked() -> None:
    ack = decode(
        Ack,
        APPLIED + ',"reading":{"color":"#456bff","level":85,"sensor":"tcs34725","lux":12.5,'
        '"counts":{"c":12600,"r":900,"g":1800,"b":10500}}}',
    )
    assert ack.reading is not None and ack.reading.color == "#456BFF"
    assert decode(Ack, encode(ack)) == ack
    for bad, kind in (
        ('{"color":"blue","level":85,"sensor":"x"}', "invalid"),
        ('{"color":"#0000FF","level":101,"sensor":"x"}', "out_of_range"),
        ('{"color":"#0000FF","level":50,"sensor":"Bad Name"}', "invalid"),
        ('{"color":"#0000FF","level":50,"sensor":"x","extra":1}', "invalid"),
        ('{"color":"#0000FF","level":50,"sensor":"x","counts":{"c":70000,"r":0,"g":0,"b":0}}',
         "out_of_range"),
    ):  # fmt: skip
        with pytest.raises(ProtocolError) as err:
            decode(Ack, APPLIED + f',"reading":{bad}}}')
        assert err.value.kind == kind, bad
    with pytest.raises(ProtocolError, match="only an applied ack"):
        decode(Ack, '{"v":1,"version":3,"stage":"armed","reading":{"color":"#0000FF",'
                    '"level":1,"sensor":"x"}}')  # fmt: skip


# ---- the agent reads it after each step ---------------------------------------------------


class SlowSensor(SimulatedSensor):
    """A simulated sensor that needs time to settle, and can be made to fail."""

    def __init__(self, settle_s: float, fail: bool = False) -> None:
        super().__init__()
        self.settle_s = settle_s  # type: ignore[misc]
        self.fail = fail

    def read(self, shown: LightState) -> Reading:
        if self.fail:
            raise OSError("I2C bus error")
        return super().read(shown)


class Rig:
    def __init__(self, sensor: SimulatedSensor | None) -> None:
        self.clock = FakeClock(START)
        self.timers = TimerHeap(self.clock, self.clock.monotonic)
        self.sent: list[tuple[str, bytes]] = []
        self.device = NativeDevice(
            "dev-a",
            fixture=SimulatedFixture(clock=self.clock),
            timers=self.timers,
            publish=lambda t, p, r: self.sent.append((t, p)),
            cond=threading.Condition(),
            sensor=sensor,
        )

    def plan(self, *steps: tuple[float, LightState]) -> None:
        plan = Plan(
            version=1,
            issued_at=self.clock(),
            steps=[PlanStep(at=START + timedelta(seconds=s), state=st) for s, st in steps],
        )
        self.device.on_message(Topics().plan("dev-a"), encode(plan))
        self.timers.run_due()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.timers.run_due()

    def applied(self) -> list[Ack]:
        acks = [decode(Ack, p) for t, p in self.sent if t.endswith("/ack")]
        return [a for a in acks if a.stage is Stage.APPLIED]

    def kinds(self) -> list[str]:
        return [t.rsplit("/", 1)[1] for t, _ in self.sent]


def test_without_a_sensor_the_ack_has_no_reading() -> None:
    rig = Rig(None)
    rig.plan((1, BLUE))
    rig.advance(1)
    (ack,) = rig.applied()
    assert ack.reading is None and ack.state == BLUE


def test_the_ack_carries_what_the_sensor_saw() -> None:
    rig = Rig(SimulatedSensor(wrong_colour="#FF0000"))
    rig.plan((1, BLUE))
    rig.advance(1)
    (ack,) = rig.applied()
    assert ack.state == BLUE  # what the fixture says it shows
    assert ack.reading == SimulatedSensor(wrong_colour="#FF0000").read(BLUE)  # what it saw


def test_the_reading_waits_for_the_fade_and_the_sensor_to_settle() -> None:
    rig = Rig(SlowSensor(settle_s=0.5))
    fade = LightState(on=True, color="#009EDB", level=80, transition_s=2)
    rig.plan((1, fade))
    rig.advance(1)
    assert rig.device.applied and not rig.applied()  # applied now, acked later
    rig.advance(2.4)
    assert not rig.applied()
    rig.advance(0.1)
    (ack,) = rig.applied()
    assert ack.applied_at == START + timedelta(seconds=1)  # the true time it was set
    assert ack.reading is not None and ack.reading.color == "#00B8FF"
    assert rig.kinds()[-2:] == ["ack", "state"]  # the measurement before the echo


def test_a_step_replaced_before_its_reading_is_acked_without_one() -> None:
    rig = Rig(SlowSensor(settle_s=1.0))
    rig.plan((1, BLUE), (1.5, OFF))
    rig.advance(1)
    rig.advance(0.5)
    rig.advance(1)
    first, second = rig.applied()
    assert first.step_at == START + timedelta(seconds=1) and first.reading is None
    assert second.reading is not None and second.reading.level == 0


def test_a_sensor_that_fails_gives_an_ack_without_a_reading() -> None:
    rig = Rig(SlowSensor(settle_s=0, fail=True))
    rig.plan((1, BLUE))
    rig.advance(1)
    (ack,) = rig.applied()
    assert ack.stage is Stage.APPLIED and ack.reading is None


# ---- the agent's command line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sensor-wrong-colour", "#FF0000"], "needs --sensor sim"),
        (["--sensor", "sim", "--sensor-wrong-colour", "red"], "not #RRGGBB"),
        (["--sensor", "tcs34725"], "--sensor-full-scale"),
        # no such I2C bus here: the error says so, no traceback
        (["--sensor", "tcs34725", "--sensor-full-scale", "12000", "--sensor-bus", "99"], "i2c"),
    ],
)
def test_bad_sensor_arguments_give_a_clear_error(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from devices.commands import main

    assert main(["agent", "--id", "dev-a", "--password", "p", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("illuminate agent: error: light sensor:") and message in err
    assert "Traceback" not in err


def test_the_sensor_options_are_one_group_of_the_agent() -> None:
    import argparse

    from devices.commands import add_agent_parser

    text = add_agent_parser(argparse.ArgumentParser().add_subparsers()).format_help()
    group = text.split("light sensor:", 1)[1].split("broker:", 1)[0]
    for option in ("--sensor ", "--sensor-wrong-colour", "--sensor-full-scale", "--sensor-bus"):
        assert option in group


def test_a_fleet_file_gives_devices_a_simulated_sensor(tmp_path: Path) -> None:
    from devices.connection import BrokerAddress
    from devices.simulator import Fleet, FleetSpec

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "- {id: sim-001, password: pw, sensor: {}}\n"
        "- {id: sim-002, password: pw, sensor: {wrong_colour: '#FF0000'}}\n"
        "- {id: sim-003, password: pw}\n"
    )
    spec = FleetSpec.load(path).with_knobs(late=1)  # knobs keep the sensors
    fleet = Fleet(spec, BrokerAddress("127.0.0.1", 1))
    sensors = {d: a.device.sensor for d, a in fleet.agents.items()}
    assert isinstance(sensors["sim-001"], SimulatedSensor) and not sensors["sim-001"].wrong_colour
    assert isinstance(sensors["sim-002"], SimulatedSensor)
    assert sensors["sim-002"].read(BLUE).color == "#FF0000"
    assert sensors["sim-003"] is None
    path.write_text("- {id: sim-001, password: pw, sensor: {wrong_colour: red}}\n")
    with pytest.raises(ValueError, match=r"sensor\.wrong_colour"):
        FleetSpec.load(path)
