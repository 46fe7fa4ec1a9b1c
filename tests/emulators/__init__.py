"""Emulated third-party lighting controllers: one per vendor an adapter speaks to.

Each is a real MQTT client with a small in-memory light that behaves as its vendor
documents; `base` says how to use one from a test, each vendor's module what it does.
`EMULATORS` maps an adapter name to its emulator, which takes the same `config`.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tests.emulators.base import (
    EMULATOR_ACCOUNTS,
    EMULATOR_PASSWORD,
    Emulator,
    EmulatorError,
    Event,
    Shown,
)
from tests.emulators.tasmota import TasmotaEmulator, TasmotaLight
from tests.emulators.wled import WledEmulator, WledLight

EMULATORS: Mapping[str, type[Emulator[Any]]] = MappingProxyType(
    {cls.vendor: cls for cls in (WledEmulator, TasmotaEmulator)}
)

__all__ = [
    "EMULATORS",
    "EMULATOR_ACCOUNTS",
    "EMULATOR_PASSWORD",
    "Emulator",
    "EmulatorError",
    "Event",
    "Shown",
    "TasmotaEmulator",
    "TasmotaLight",
    "WledEmulator",
    "WledLight",
]
