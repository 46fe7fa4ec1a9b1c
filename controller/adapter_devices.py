"""The registered third-party devices, as adapters: which device a vendor topic belongs
to, and what each device is sent.

`AdapterDevices` holds an `Adapter` (`devices/adapters/`) per registered, active device
whose adapter is not `native`, read again from the registry when its revision moves.
Every topic is exact, so a message is routed by one dictionary lookup; a topic that
speaks for several devices (a Zigbee2MQTT bridge's state) routes to each of them.

`check_scope` is the registration's rule for a new device's vendor topics: none under
the native topic root (a device could otherwise write another's acks), and none that
another active device already uses (two registrations of one WLED would share its
commands), except the topics a Zigbee2MQTT bridge shares among its lights; and no
topic under a bridge's base topic but its own lights'.

`account_of` says which broker account a device logs in with: its own (named as the
device) for a native device and most controllers, or its bridge's, shared with the
other lights behind it (`devices.adapters.Bridge`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import topic_matches_sub

from controller.broker.accounts import Scope
from controller.store.base import DeviceRecord, RegistryStore
from devices.adapters import Adapter, AdapterConfigError, adapter_for
from devices.protocol import Topics

log = logging.getLogger(__name__)

NATIVE = "native"
SHARED_SUFFIX = "/bridge/state"
"""A Zigbee2MQTT bridge's state topic: every light behind the bridge reports on it."""


MAX_CACHED = 65_536
_cache: dict[tuple[str, tuple[tuple[str, str], ...]], Adapter] = {}
_cache_lock = threading.Lock()


def adapter_of(name: str, config: Mapping[str, Any]) -> Adapter:
    """The adapter `name` for a device with this config (AdapterConfigError if refused).
    Adapters are pure, so one instance serves every caller with the same config."""
    if not isinstance(config, Mapping):
        raise AdapterConfigError(f"{name} config must be an object")
    key = (name, tuple(sorted((str(k), repr(v)) for k, v in config.items())))
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    adapter = adapter_for(name, dict(config))
    with _cache_lock:
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[key] = adapter
    return adapter


@dataclass(frozen=True)
class Account:
    """The broker account a device logs in with: `name` (its username and client id),
    the `scope` of a third-party controller (None: a native device's own rights), and
    whether it is a bridge's, shared by every light behind it."""

    name: str
    scope: Scope | None = None
    shared: bool = False


def account_of(device_id: str, adapter: str, config: Mapping[str, Any]) -> Account:
    """The account of a device registered with this adapter and config
    (AdapterConfigError if the adapter refuses the config)."""
    if adapter == NATIVE:
        return Account(device_id)
    vendor = adapter_of(adapter, config)
    bridge = vendor.bridge
    if bridge is not None:
        both = (bridge.scope_filter,)
        return Account(bridge.account, Scope(both, both), shared=True)
    return Account(device_id, Scope(vendor.topics.reports, vendor.topics.commands))


def record_account(record: DeviceRecord) -> Account:
    """`account_of` a registered device; its own account if its config is refused now."""
    try:
        return account_of(record.id, record.adapter, record.config)
    except AdapterConfigError:
        return Account(record.id)


def sharing(account: str, records: Iterable[DeviceRecord], *, but: str = "") -> list[str]:
    """The active devices (except `but`) that log in with the account named `account`."""
    return sorted(
        r.id
        for r in records
        if r.active and r.id != but and r.adapter != NATIVE and record_account(r).name == account
    )


def bridge_accounts(records: Iterable[DeviceRecord]) -> dict[str, list[str]]:
    """The bridge accounts in use, each with the active devices behind it."""
    found: dict[str, list[str]] = {}
    for r in records:
        if r.active and r.adapter != NATIVE:
            account = record_account(r)
            if account.shared:
                found.setdefault(account.name, []).append(r.id)
    return found


def check_scope(
    adapter: Adapter, device_id: str, topics: Topics, records: Iterable[DeviceRecord]
) -> None:
    """Refuse (AdapterConfigError) a new third-party device whose vendor topics are under
    the topic root, or used by another active third-party device, or under another
    bridge's base topic (and a bridge whose base topic holds another device's topics,
    or the topic root), or whose bridge account is named as another device."""
    root = f"{topics.root}/"
    own = (*adapter.topics.reports, *adapter.topics.commands)
    for topic in own:
        if topic == topics.root or topic.startswith(root):
            raise AdapterConfigError(
                f"config: topic {topic!r} is under the topic root {topics.root!r}, "
                "which is the native devices'"
            )
    bridge = adapter.bridge
    if bridge is not None and topic_matches_sub(bridge.scope_filter, root + "x"):
        raise AdapterConfigError(
            f"config: base_topic {bridge.base!r} holds the topic root {topics.root!r}, "
            "which is the native devices'"
        )
    mine = {t for t in own if not t.endswith(SHARED_SUFFIX)}
    for record in records:
        if not record.active:
            continue
        if bridge is not None and record.id == bridge.account:
            raise AdapterConfigError(
                f"config: the bridge's broker account would be {bridge.account!r}, "
                "which is a registered device's id"
            )
        if record.adapter == NATIVE:
            continue
        try:
            other = adapter_of(record.adapter, record.config)
        except AdapterConfigError:
            continue
        theirs = {*other.topics.reports, *other.topics.commands}
        taken = mine & theirs
        if taken:
            raise AdapterConfigError(
                f"config: topic {sorted(taken)[0]!r} is already used by device {record.id!r}"
            )
        same_bridge = (
            bridge is not None
            and other.bridge is not None
            and bridge.account == other.bridge.account
        )
        if same_bridge:
            continue
        if other.bridge is not None:
            under = sorted(t for t in own if topic_matches_sub(other.bridge.scope_filter, t))
            if under:
                raise AdapterConfigError(
                    f"config: topic {under[0]!r} is under the base topic "
                    f"{other.bridge.base!r} of the bridge of device {record.id!r}"
                )
        if bridge is not None:
            held = sorted(t for t in theirs if topic_matches_sub(bridge.scope_filter, t))
            if held:
                raise AdapterConfigError(
                    f"config: base_topic {bridge.base!r} holds topic {held[0]!r} of device "
                    f"{record.id!r}"
                )


class AdapterDevices:
    """The active third-party devices of a registry, by id and by report topic."""

    def __init__(self, registry: RegistryStore, on_change: Callable[[], None] = lambda: None):
        self.registry = registry
        self.on_change = on_change
        """Told when the set of report topics changed (the broker link subscribes)."""
        self._lock = threading.Lock()
        self._revision: int | None = None
        self._devices: dict[str, Adapter] = {}
        self._routes: dict[str, tuple[str, ...]] = {}

    def refresh(self) -> bool:
        """Read the registry again if its revision moved; True when the topics changed."""
        revision = self.registry.revision()
        with self._lock:
            if revision == self._revision:
                return False
        devices: dict[str, Adapter] = {}
        for record in self.registry.devices().values():
            if not record.active or record.adapter == NATIVE:
                continue
            try:
                devices[record.id] = adapter_of(record.adapter, record.config)
            except AdapterConfigError as exc:  # stored before a rule changed: skip it
                log.error("device %s: its %s config is refused: %s", record.id, record.adapter, exc)
        routes: dict[str, list[str]] = {}
        for device_id in sorted(devices):
            for topic in devices[device_id].topics.reports:
                routes.setdefault(topic, []).append(device_id)
        with self._lock:
            before = set(self._routes)
            self._revision = revision
            self._devices = devices
            self._routes = {t: tuple(ids) for t, ids in routes.items()}
            changed = before != set(self._routes)
        if changed:
            self.on_change()
        return changed

    def adapter(self, device_id: str) -> Adapter | None:
        """The device's adapter; None for a native (or unknown) device."""
        with self._lock:
            return self._devices.get(device_id)

    def all(self) -> dict[str, Adapter]:
        """Every active third-party device's adapter, by device id."""
        with self._lock:
            return dict(self._devices)

    def is_live(self, device_id: str) -> bool:
        return self.adapter(device_id) is not None

    def route(self, topic: str) -> tuple[tuple[str, Adapter], ...]:
        """The devices a message on `topic` speaks for, with their adapters."""
        with self._lock:
            ids = self._routes.get(topic, ())
            return tuple((d, self._devices[d]) for d in ids)

    def report_topics(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._routes)
