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
from tests.emulators.ha_json import HaJsonEmulator, HaLight
from tests.emulators.shelly_gen1 import ShellyGen1Emulator, ShellyGen1Light
from tests.emulators.shelly_gen2 import ShellyGen2Emulator, ShellyGen2Light
from tests.emulators.tasmota import TasmotaEmulator, TasmotaLight
from tests.emulators.wled import WledEmulator, WledLight
from tests.emulators.zigbee2mqtt import Zigbee2MqttEmulator, ZigbeeLight

EMULATORS: Mapping[str, type[Emulator[Any]]] = MappingProxyType(
    {
        cls.vendor: cls
        for cls in (
            WledEmulator,
            TasmotaEmulator,
            Zigbee2MqttEmulator,
            HaJsonEmulator,
            ShellyGen2Emulator,
            ShellyGen1Emulator,
        )
    }
)

__all__ = [
    "EMULATORS",
    "EMULATOR_ACCOUNTS",
    "EMULATOR_PASSWORD",
    "Emulator",
    "EmulatorError",
    "Event",
    "HaJsonEmulator",
    "HaLight",
    "ShellyGen1Emulator",
    "ShellyGen1Light",
    "ShellyGen2Emulator",
    "ShellyGen2Light",
    "Shown",
    "TasmotaEmulator",
    "TasmotaLight",
    "WledEmulator",
    "WledLight",
    "Zigbee2MqttEmulator",
    "ZigbeeLight",
]
