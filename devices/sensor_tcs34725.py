"""A driver for the TCS34725 colour light-to-digital converter (ams), over I²C (smbus2).

The chip sits at address 0x29 and integrates four photodiode channels at once: clear
(unfiltered), red, green and blue, each a 16-bit count. The registers used (TCS3472
datasheet, "Register Set"; every access sets the command bit 0x80, and 0x20 for an
auto-incrementing block read):

| register | address | use |
|---|---|---|
| ENABLE | 0x00 | PON (0x01) powers the oscillator; AEN (0x02) starts the RGBC integrations |
| ATIME | 0x01 | integration time: (256 - ATIME) cycles of 2.4 ms |
| CONTROL | 0x0F | gain: 0 = 1x, 1 = 4x, 2 = 16x, 3 = 60x |
| ID | 0x12 | 0x44 (TCS34721/5) or 0x4D (TCS34723/7) |
| STATUS | 0x13 | AVALID (0x01): an integration has completed since AEN |
| CDATAL ... BDATAH | 0x14-0x1B | clear, red, green, blue counts, low byte first |

Once enabled the chip integrates continuously, so a reading is one status read and one
8-byte block read: quick enough for the device's event-loop thread. The agent waits
`settle_s` (two integrations) after the output settled, so the counts it reads cover
only the new light.

From counts to a reading:
1. Infrared: the colour channels all pass some infrared the clear channel sees once;
   `ir = (R + G + B - C) / 2`, taken off each channel (ams design note DN40, "Lux and
   CCT Calculations using ams Color Sensors").
2. White balance: each channel times its `balance` factor, so a white light gives equal
   channels (1, 1, 1 without a calibration).
3. Colour: the channels are linear light; scaled to the brightest and companded as sRGB
   (IEC 61966-2-1), they give the chroma the reading reports (`#RRGGBB`, brightest
   channel FF). Below `dark_count` on every channel the sensor saw no light (#000000).
4. Level: the brightest balanced channel in percent of `full_scale`, the count that
   channel reads with the fixture at full output (a calibration: see docs/devices.md),
   so a colour and its level mean what they mean in a plan step.
5. Lux (a raw figure for staff): DN40's `(0.136 R + 1.000 G - 0.444 B) / CPL`, with
   `CPL = integration_ms * gain / 310` (no glass over the sensor).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from devices.colour import RGB, rgb_to_hex
from devices.protocol import Reading, SensorCounts
from devices.sensor import DARK

log = logging.getLogger(__name__)

ADDRESS = 0x29
COMMAND = 0x80
AUTO_INCREMENT = 0x20
ENABLE, ATIME, CONTROL, ID, STATUS, CDATAL = 0x00, 0x01, 0x0F, 0x12, 0x13, 0x14
PON, AEN = 0x01, 0x02
AVALID = 0x01
IDS = {0x44: "TCS34721/TCS34725", 0x4D: "TCS34723/TCS34727"}
GAINS = {1: 0x00, 4: 0x01, 16: 0x02, 60: 0x03}
CYCLE_MS = 2.4
MAX_CYCLES = 256
DEFAULT_INTEGRATION_MS = 153.6  # 64 cycles: the counts reach the full 16 bits
DEFAULT_GAIN = 4
DF = 310.0  # DN40's device factor
LUX_COEFFICIENTS = (0.136, 1.000, -0.444)
POWER_ON_S = 0.0024  # the datasheet's 2.4 ms from PON to AEN


class Bus(Protocol):
    """The part of `smbus2.SMBus` the driver uses (a test replays recorded bytes)."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Counts:
    clear: int
    red: int
    green: int
    blue: int

    @classmethod
    def from_block(cls, block: Sequence[int]) -> Counts:
        """The 8 bytes of CDATAL..BDATAH, each channel low byte first."""
        if len(block) != 8 or any(not 0 <= b <= 255 for b in block):
            raise OSError(f"the TCS34725 gave {len(block)} bytes, not the 8 of its counts")
        c, r, g, b = (block[i] | block[i + 1] << 8 for i in range(0, 8, 2))
        return cls(c, r, g, b)


def atime_for(integration_ms: float) -> int:
    """The ATIME register value for an integration time (2.4 ms to 614.4 ms)."""
    cycles = round(integration_ms / CYCLE_MS)
    if not 1 <= cycles <= MAX_CYCLES:
        raise ValueError(
            f"integration time {integration_ms:g} ms is outside {CYCLE_MS:g}-"
            f"{CYCLE_MS * MAX_CYCLES:g} ms"
        )
    return MAX_CYCLES - cycles


def _companded(channel: float) -> float:
    """Linear light to sRGB (IEC 61966-2-1, section 5.2)."""
    return 12.92 * channel if channel <= 0.0031308 else 1.055 * channel ** (1 / 2.4) - 0.055


@dataclass(frozen=True)
class Conversion:
    """How counts become a reading, at one gain and integration time."""

    full_scale: float
    """The brightest balanced channel's count at the fixture's full output."""
    gain: int = DEFAULT_GAIN
    integration_ms: float = DEFAULT_INTEGRATION_MS
    balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dark_count: float = 20.0
    """Below this on every balanced channel the sensor saw no light."""

    def __post_init__(self) -> None:
        if not self.full_scale > 0:
            raise ValueError("the full-scale count must be above 0")
        if self.gain not in GAINS:
            raise ValueError(f"gain {self.gain!r} is not one of {sorted(GAINS)}")
        if any(not f > 0 for f in self.balance):
            raise ValueError("white-balance factors must be above 0")
        atime_for(self.integration_ms)

    @property
    def max_count(self) -> int:
        """The count at which a channel saturates."""
        cycles = MAX_CYCLES - atime_for(self.integration_ms)
        return min(65535, 1024 * cycles)

    def reading(self, counts: Counts) -> Reading:
        ir = max(0.0, (counts.red + counts.green + counts.blue - counts.clear) / 2)
        raw = (counts.red - ir, counts.green - ir, counts.blue - ir)
        balanced = [max(0.0, c) * f for c, f in zip(raw, self.balance, strict=True)]
        top = max(balanced)
        cpl = self.integration_ms * self.gain / DF
        lux = max(0.0, sum(k * c for k, c in zip(LUX_COEFFICIENTS, raw, strict=True)) / cpl)
        figures = SensorCounts(c=counts.clear, r=counts.red, g=counts.green, b=counts.blue)
        if top < self.dark_count:
            return Reading(
                color=DARK, level=0.0, sensor="tcs34725", lux=round(lux, 1), counts=figures
            )
        chroma = RGB(*(round(_companded(c / top) * 255) for c in balanced))
        level = min(100.0, top / self.full_scale * 100)
        return Reading(
            color=rgb_to_hex(chroma),
            level=round(level, 1),
            sensor="tcs34725",
            lux=round(lux, 1),
            counts=figures,
        )


class Tcs34725:
    """One TCS34725 on an I²C bus. `open` checks its id and starts it integrating."""

    name = "tcs34725"

    def __init__(
        self,
        bus: Bus,
        conversion: Conversion,
        *,
        address: int = ADDRESS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus = bus
        self.conversion = conversion
        self.address = address
        self._sleep = sleep
        self._warned_saturated = False

    @property
    def settle_s(self) -> float:
        """Two integrations and a margin: the counts then cover only the new light."""
        return 2 * self.conversion.integration_ms / 1000 + 0.05

    @classmethod
    def open(
        cls,
        bus_number: int = 1,
        *,
        address: int | None = None,
        full_scale: float | None = None,
        gain: int | None = None,
        integration_ms: float | None = None,
    ) -> Tcs34725:
        """Open `/dev/i2c-N` with smbus2, check the chip and start it. `full_scale` is
        required: see `Conversion`."""
        if full_scale is None:
            raise ValueError(
                "the TCS34725 needs --sensor-full-scale COUNT: the count of its brightest "
                "channel with the fixture at full output (docs/devices.md)"
            )
        conversion = Conversion(
            full_scale=full_scale,
            gain=gain if gain is not None else DEFAULT_GAIN,
            integration_ms=integration_ms if integration_ms is not None else DEFAULT_INTEGRATION_MS,
        )
        from smbus2 import SMBus

        bus = SMBus(bus_number)
        sensor = cls(bus, conversion, address=address if address is not None else ADDRESS)
        try:
            sensor.start()
        except Exception:
            bus.close()
            raise
        return sensor

    def _write(self, register: int, value: int) -> None:
        self.bus.write_byte_data(self.address, COMMAND | register, value)

    def _read(self, register: int) -> int:
        return self.bus.read_byte_data(self.address, COMMAND | register)

    def start(self) -> None:
        """Check the id, set the integration time and gain, power on and enable."""
        chip = self._read(ID)
        if chip not in IDS:
            raise OSError(
                f"no TCS34725 at I2C address {self.address:#04x}: its id register reads "
                f"{chip:#04x}, not {' or '.join(f'{i:#04x}' for i in IDS)}"
            )
        self._write(ATIME, atime_for(self.conversion.integration_ms))
        self._write(CONTROL, GAINS[self.conversion.gain])
        self._write(ENABLE, PON)
        self._sleep(POWER_ON_S)
        self._write(ENABLE, PON | AEN)
        log.info(
            "light sensor: %s at %#04x, %g ms, gain %dx",
            IDS[chip],
            self.address,
            self.conversion.integration_ms,
            self.conversion.gain,
        )

    def counts(self) -> Counts:
        """The counts of the last complete integration. OSError when there is none yet."""
        if not self._read(STATUS) & AVALID:
            raise OSError("the TCS34725 has not completed an integration yet")
        block = self.bus.read_i2c_block_data(self.address, COMMAND | AUTO_INCREMENT | CDATAL, 8)
        return Counts.from_block(block)

    def read(self, shown: object = None) -> Reading:
        """One reading; `shown` (the fixture's own report) is not used: this measures."""
        counts = self.counts()
        if counts.clear >= self.conversion.max_count and not self._warned_saturated:
            self._warned_saturated = True
            log.warning("light sensor: saturated (clear %d); lower the gain", counts.clear)
        return self.conversion.reading(counts)

    def stop(self) -> None:
        """Power the chip down and close the bus."""
        try:
            self._write(ENABLE, 0)
        finally:
            self.bus.close()
