"""The agent says whether its clock is synchronised: the kernel's answer, in its state."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import pytest

from devices import kernelclock as clocksync
from devices.clock import FakeClock
from devices.fixture import SimulatedFixture
from devices.native import NativeDevice
from devices.protocol import DeviceState, Topics, decode
from devices.timers import TimerHeap
from tests.devices.test_native import START


def _reported(clock_synced: Any) -> tuple[DeviceState, bytes]:
    clock = FakeClock(START)
    sent: list[tuple[str, bytes]] = []
    device = NativeDevice(
        "dev-a",
        fixture=SimulatedFixture(clock=clock),
        timers=TimerHeap(clock, clock.monotonic),
        publish=lambda t, p, _r: sent.append((t, p)),
        cond=threading.Condition(),
        clock_synced=clock_synced,
    )
    device.on_connected()
    ((topic, payload),) = sent
    assert topic == Topics().state("dev-a")
    return decode(DeviceState, payload), payload


def test_the_state_report_says_whether_the_clock_is_synced() -> None:
    assert _reported(lambda: True)[0].clock_synced is True
    assert _reported(lambda: False)[0].clock_synced is False


def test_without_an_answer_the_field_is_left_out() -> None:
    for source in (None, lambda: None):
        state, payload = _reported(source)
        assert state.clock_synced is None
        assert b"clock_synced" not in payload  # older controllers see what they always saw


def test_a_failing_source_does_not_stop_the_report() -> None:
    def broken() -> bool:
        raise OSError("no clock")

    assert _reported(broken)[0].clock_synced is None


class _Libc:
    def __init__(self, answer: int, status: int) -> None:
        self.answer, self.status = answer, status

    def adjtimex(self, ref: Any) -> int:
        ref._obj.status = self.status
        return self.answer


@pytest.mark.parametrize(
    ("answer", "status", "synced"),
    [
        (0, 0x2001, True),  # TIME_OK, PLL and nanosecond bits only
        (0, clocksync.STA_UNSYNC, False),
        (clocksync.TIME_ERROR, 0, False),
        (-1, 0, None),  # the call was refused
    ],
)
def test_the_kernels_answer(monkeypatch, answer: int, status: int, synced: bool | None) -> None:
    monkeypatch.setattr(clocksync.sys, "platform", "linux")
    monkeypatch.setattr(clocksync.ctypes, "CDLL", lambda *_a, **_k: _Libc(answer, status))
    assert clocksync.kernel_clock_synced() is synced


def test_not_linux_has_no_answer(monkeypatch) -> None:
    monkeypatch.setattr(clocksync.sys, "platform", "darwin")
    assert clocksync.kernel_clock_synced() is None


def test_this_machine_answers_without_changing_anything() -> None:
    assert clocksync.kernel_clock_synced() in (True, False, None)
    assert ctypes.sizeof(clocksync._Timex) >= 208  # the kernel's struct timex fits
