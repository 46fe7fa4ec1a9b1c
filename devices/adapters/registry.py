"""Which adapter a registration names, built from its validated `config`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from devices.adapters.base import Adapter, AdapterConfigError
from devices.adapters.ha_json import HaJsonAdapter
from devices.adapters.shelly_gen1 import ShellyGen1Adapter
from devices.adapters.shelly_gen2 import ShellyGen2Adapter
from devices.adapters.tasmota import TasmotaAdapter
from devices.adapters.wled import WledAdapter
from devices.adapters.zigbee2mqtt import Zigbee2MqttAdapter

ADAPTERS: Mapping[str, type[Any]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            WledAdapter,
            TasmotaAdapter,
            Zigbee2MqttAdapter,
            HaJsonAdapter,
            ShellyGen2Adapter,
            ShellyGen1Adapter,
        )
    }
)
"""Adapter name (as registered) to its class. The native protocol is not an adapter."""

ADAPTER_NAMES: tuple[str, ...] = tuple(ADAPTERS)


def adapter_for(name: str, config: Mapping[str, Any]) -> Adapter:
    """The adapter `name` for one device, its `config` validated.

    Raises AdapterConfigError naming the adapter, the field and the fault.
    """
    cls = ADAPTERS.get(name)
    if cls is None:
        known = ", ".join(ADAPTER_NAMES)
        raise AdapterConfigError(f"unknown adapter {name!r}: use one of {known}")
    if not isinstance(config, Mapping):
        raise AdapterConfigError(f"{name} config must be an object, not {type(config).__name__}")
    try:
        validated = cls.Config.model_validate(dict(config))
    except ValidationError as exc:
        faults = "; ".join(_describe(error) for error in exc.errors())
        raise AdapterConfigError(f"{name} config: {faults}") from None
    adapter: Adapter = cls(validated)
    return adapter


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"
