"""Adapters for third-party lighting controllers: pure, one module per vendor.

The public surface is what `__all__` lists; see `base` for the contract.
"""

from devices.adapters.base import (
    Adapter,
    AdapterConfigError,
    AdapterTopics,
    Availability,
    Bridge,
    Command,
    Ignored,
    Malformed,
    OtherColour,
    Output,
    Parsed,
    Reply,
    Report,
    Reported,
    StateRequest,
    Strength,
    combined,
    target_output,
)
from devices.adapters.registry import ADAPTER_NAMES, ADAPTERS, adapter_for

__all__ = [
    "ADAPTERS",
    "ADAPTER_NAMES",
    "Adapter",
    "AdapterConfigError",
    "AdapterTopics",
    "Availability",
    "Bridge",
    "Command",
    "Ignored",
    "Malformed",
    "OtherColour",
    "Output",
    "Parsed",
    "Reply",
    "Report",
    "Reported",
    "StateRequest",
    "Strength",
    "adapter_for",
    "combined",
    "target_output",
]
