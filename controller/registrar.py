"""The registrar: registering, rotating and decommissioning devices, on the registry
and on the broker together. The staff API and `illuminate devices ...` both use it.

- **register** (one device, or a checked import batch): the broker accounts are created
  first (when the broker provisions accounts), then the registry commits the devices
  and their audit entries in one transaction; if that fails, the accounts are deleted
  again. The answer holds the device's MQTT settings and its password, shown only then.
- **rotate**: a new password. The registry's transaction (new hash, the device marked
  offline, the audit entry) commits only if the broker took the new password, which
  closes the device's connections at once; the old password stops working then.
- **decommission**: the broker account is deleted (its connections closed, logins
  refused) inside the registry's transaction, which drops the secret, marks the
  device offline, supersedes its open plans and keeps its record and history.

The broker closes a connection it kicks for an account change without the device's
last will, so nothing on the broker says the device went offline: the registry marks
it offline itself, and `on_revoked` (the controller's) corrects the retained status
on the broker (and, for a decommissioned device, clears its retained topics).

Lights behind one Zigbee2MQTT bridge share the bridge's one account (`account_of`):
the first light's registration creates it and shows its password; the next lights'
change nothing on the broker and answer `password: null` with the lights it is shared
with; rotating any of them gives the bridge a new password; the account goes with the
last light's decommissioning.

Without `accounts` (no dynsec admin configured, or the embedded broker) the registry
is changed alone, and the operator provisions the broker's accounts.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from controller.access import AuditKind
from controller.adapter_devices import (
    Account,
    account_of,
    adapter_of,
    bridge_accounts,
    check_scope,
    record_account,
    sharing,
)
from controller.broker.accounts import (
    AccountError,
    AccountExists,
    AccountNotFound,
    DeviceAccounts,
    Scope,
)
from controller.registration import (
    BatchProblem,
    BatchRejected,
    Credential,
    ImportRejected,
    Prepared,
    ProblemKind,
    check_batch,
    hash_chosen_secret,
    hash_generated_secret,
    located,
    new_password,
)
from controller.store.audit import AuditRecord
from controller.store.base import DeviceRecord, NewDevice, Stores, UnknownObject
from devices.adapters import ADAPTER_NAMES
from devices.connection import BrokerAddress
from devices.protocol import Topics

if TYPE_CHECKING:
    from controller.settings import Settings

log = logging.getLogger(__name__)

ADAPTERS = ("native", *ADAPTER_NAMES)
"""The adapters a device may be registered with: `native` (the Illuminate agent) or a
third-party controller's (`devices/adapters/`)."""

Revoked = Callable[[str, bool], None]
"""Told (device id, decommissioned?) after a rotation or a decommission committed."""


P = ParamSpec("P")
R = TypeVar("R")


def _one_at_a_time(
    method: Callable[Concatenate[Registrar, P], R],
) -> Callable[Concatenate[Registrar, P], R]:
    """Run a Registrar change under its lock (see `Registrar._lock`)."""

    @functools.wraps(method)
    def run(self: Registrar, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class BrokerUnavailable(RuntimeError):
    """The broker did not make the account change; nothing was changed."""


@dataclass(frozen=True)
class MqttAccess:
    """What a device needs to connect: where, as whom, and its topics."""

    host: str
    port: int
    tls: bool
    username: str
    password: str | None
    """None: the account is a bridge's that already had one (`shared_with` names the
    devices behind it); it is unchanged, and a rotation draws a new one."""
    client_id: str
    topics: dict[str, str | list[str]]
    shared_with: tuple[str, ...] = ()
    """The other registered devices that log in with this account (a bridge's lights)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "username": self.username,
            "password": self.password,
            "client_id": self.client_id,
            "topics": dict(self.topics),
            "shared_with": list(self.shared_with),
        }


@dataclass(frozen=True)
class Issued:
    """A device's new credentials (shown once) and its record."""

    record: DeviceRecord
    mqtt: MqttAccess


@dataclass
class Registrar:
    stores: Stores
    topics: Topics
    endpoint: BrokerAddress
    """The broker address devices are given (host, port, TLS)."""
    accounts: DeviceAccounts | None = None
    on_revoked: Revoked | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    """One change at a time in this process: a bridge's account is shared, so whether a
    light is the first or the last behind it is decided and acted on together."""

    @property
    def provisions(self) -> bool:
        """Does the registrar create the broker's accounts itself?"""
        return self.accounts is not None

    def access(
        self,
        device_id: str,
        password: str | None,
        account: Account | None = None,
        vendor: Scope | None = None,
        shared_with: Sequence[str] = (),
    ) -> MqttAccess:
        """What the device (or its bridge) is given: the account's login, and the
        device's own topics (`vendor`: a third-party device's reports and commands)."""
        t = self.topics
        login = account.name if account is not None else device_id
        topics: dict[str, str | list[str]]
        if vendor is not None:  # a third-party controller: its vendor topics only
            topics = {"reports": list(vendor.reports), "commands": list(vendor.commands)}
        else:
            topics = {
                "plan": t.plan(device_id),
                "ack": t.ack(device_id),
                "state": t.state(device_id),
                "status": t.status(device_id),
                "controller_status": t.controller_status,
            }
        return MqttAccess(
            host=self.endpoint.host,
            port=self.endpoint.port,
            tls=self.endpoint.tls,
            username=login,
            password=password,
            client_id=login,
            topics=topics,
            shared_with=tuple(shared_with),
        )

    # --- register

    @_one_at_a_time
    def register(
        self,
        device_id: str,
        site_id: str,
        actor: str,
        now: datetime,
        *,
        adapter: str = "native",
        config: Mapping[str, Any] | None = None,
        password: str | None = None,
        via: str = "api",
    ) -> Issued:
        """Register one device. `password`: one the operator chose (scrypt-hashed),
        else a new random one. BatchRejected (a RegistryError) names every problem;
        BrokerUnavailable when the broker refused its account; AdapterConfigError (a
        ValueError) for an adapter's config it refuses, or topics another device has."""
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}: use one of {', '.join(ADAPTERS)}")
        stored: dict[str, Any] = dict(config or {})
        records = self.stores.registry.devices().values()
        vendor: Scope | None = None
        if adapter != "native":
            adapter_obj = adapter_of(adapter, stored)  # AdapterConfigError names the fault
            stored = adapter_obj.config.model_dump(mode="json")  # type: ignore[attr-defined]
            vendor = Scope(adapter_obj.topics.reports, adapter_obj.topics.commands)
            check_scope(adapter_obj, device_id, self.topics, records)
        elif stored:
            raise ValueError("native devices take no config")
        self._check_not_a_bridge([device_id], records)
        account = account_of(device_id, adapter, stored)
        others = sharing(account.name, records) if account.shared else []
        # its lights may have been registered before the broker had the account: make it
        try:
            held = self.accounts is None or not others or self.accounts.exists(account.name)
        except AccountError as exc:
            raise BrokerUnavailable(
                f"the broker did not say whether it has {account.name!r}: {exc}; "
                "nothing was registered"
            ) from exc
        if others and held:  # a light behind a bridge that has its account: no change
            device = NewDevice(device_id, site_id, None, adapter, stored)
            self._commit([device], [], actor, now, via)
            record = self.stores.registry.devices([device_id])[device_id]
            return Issued(record, self.access(device_id, None, account, vendor, others))
        secret = password or new_password()
        hashed = hash_chosen_secret(secret) if password else hash_generated_secret(secret)
        device = NewDevice(device_id, site_id, hashed, adapter, stored)
        credential = Credential(account.name, secret, account.scope)
        self._commit([device], [credential], actor, now, via)
        record = self.stores.registry.devices([device_id])[device_id]
        return Issued(record, self.access(device_id, secret, account, vendor, others))

    @staticmethod
    def _check_not_a_bridge(device_ids: Sequence[str], records: Iterable[DeviceRecord]) -> None:
        """A device id must not be the broker account of a bridge in use (BatchRejected,
        the id reserved)."""
        bridges = bridge_accounts(records)
        problems = [
            BatchProblem(
                index,
                device_id,
                ProblemKind.RESERVED,
                f"device id {device_id!r} is the broker account of the bridge of "
                f"{', '.join(bridges[device_id])}: choose another id",
            )
            for index, device_id in enumerate(device_ids)
            if device_id in bridges
        ]
        if problems:
            raise BatchRejected(problems)

    @_one_at_a_time
    def register_batch(self, prepared: Prepared, actor: str, now: datetime, via: str) -> None:
        """Register a checked import batch (`registration.prepare`), accounts included;
        ImportRejected (nothing registered) for a problem that appeared since."""
        try:
            self._check_not_a_bridge(
                [d.id for d in prepared.devices], self.stores.registry.devices().values()
            )
            self._commit(list(prepared.devices), list(prepared.credentials), actor, now, via)
        except BatchRejected as exc:
            raise ImportRejected(located(exc.problems, prepared.wheres)) from None

    def _commit(
        self,
        devices: Sequence[NewDevice],
        credentials: Sequence[Credential],
        actor: str,
        now: datetime,
        via: str,
    ) -> None:
        check_batch(self.stores.registry, devices)  # refuse before touching the broker
        cities = {s.id: s.city for s in self.stores.registry.catalog().sites}
        audit = [
            AuditRecord(
                at=now,
                actor=actor,
                kind=AuditKind.DEVICE,
                action="registered",
                subject=d.id,
                city=cities.get(d.site_id),
                detail={"site": d.site_id, "adapter": d.adapter, "via": via},
            )
            for d in devices
        ]
        created = self._create_accounts(credentials)
        try:
            self.stores.registry.add_devices(devices, now, audit)
        except BaseException:
            self._delete_accounts(created)
            raise

    def _create_accounts(self, credentials: Sequence[Credential]) -> list[str]:
        if self.accounts is None:
            return []
        created: list[str] = []
        many = getattr(self.accounts, "create_many", None)
        if callable(many) and len(credentials) > 1:
            try:  # one transaction for the whole batch, where the accounts allow it
                many([(c.id, c.password) for c in credentials])
                return [c.id for c in credentials]
            except AccountExists:
                pass  # a stray account among them: nothing was created; one by one below
            except AccountError as exc:
                raise BrokerUnavailable(
                    f"the broker did not create the device accounts: {exc}; nothing was registered"
                ) from exc
        try:
            for c in credentials:
                try:
                    self._create(c)
                except AccountExists:
                    # not in the registry (checked above): a leftover of an interrupted
                    # registration. The registry decides: replace it.
                    log.warning("replacing a stray broker account for %s", c.id)
                    self.accounts.delete(c.id)
                    self._create(c)
                created.append(c.id)
        except AccountError as exc:
            self._delete_accounts(created)
            raise BrokerUnavailable(
                f"the broker did not create the device account: {exc}; nothing was registered"
            ) from exc
        return created

    def _create(self, c: Credential) -> None:
        assert self.accounts is not None
        if c.scope is None:
            self.accounts.create(c.id, c.password)
        else:
            self.accounts.create(c.id, c.password, c.scope)

    def _delete_accounts(self, device_ids: Sequence[str]) -> None:
        if self.accounts is None:
            return
        for device_id in device_ids:
            try:
                self.accounts.delete(device_id)
            except AccountError:
                log.exception("could not remove the broker account of %s", device_id)

    # --- rotate and decommission

    @_one_at_a_time
    def rotate(
        self, device_id: str, actor: str, now: datetime, *, password: str | None = None
    ) -> Issued:
        """A new password; the old one stops working at once. UnknownObject, Retired,
        BrokerUnavailable (nothing changed)."""
        record = self._record(device_id)
        account = record_account(record)
        secret = password or new_password()
        hashed = hash_chosen_secret(secret) if password else hash_generated_secret(secret)
        accounts = self.accounts

        def on_broker() -> None:
            if accounts is None:
                return
            try:
                try:
                    accounts.rotate(account.name, secret)
                except AccountNotFound:
                    # registered before the broker provisioned accounts: create it now
                    if account.scope is None:
                        accounts.create(account.name, secret)
                    else:
                        accounts.create(account.name, secret, account.scope)
                if account.name != device_id:
                    accounts.delete(device_id)  # an account of its own from before bridges
            except AccountError as exc:
                raise BrokerUnavailable(
                    f"the broker did not take the new password: {exc}; nothing was changed"
                ) from exc

        audit = AuditRecord(
            at=now,
            actor=actor,
            kind=AuditKind.DEVICE,
            action="credentials-rotated",
            subject=device_id,
            city=record.city,
        )
        self.stores.registry.set_secret(device_id, hashed, now, [audit], on_broker)
        self._revoked(device_id, decommissioned=False)
        fresh = self.stores.registry.devices([device_id])[device_id]
        others = sharing(account.name, self.stores.registry.devices().values(), but=device_id)
        return Issued(fresh, self.access(device_id, secret, account, _vendor_of(fresh), others))

    @_one_at_a_time
    def decommission(self, device_id: str, actor: str, now: datetime) -> DeviceRecord:
        """Revoke the device's credentials and take it out of service; its record and
        history stay. UnknownObject, Retired, BrokerUnavailable (nothing changed)."""
        record = self._record(device_id)
        account = record_account(record)
        accounts = self.accounts
        # a bridge's account stays while another light behind it is in service
        others = sharing(account.name, self.stores.registry.devices().values(), but=device_id)

        def on_broker() -> None:
            if accounts is None:
                return
            try:
                if account.name != device_id:
                    accounts.delete(device_id)  # an account of its own from before bridges
                if not others:
                    accounts.delete(account.name)
            except AccountError as exc:
                raise BrokerUnavailable(
                    f"the broker did not remove the device account: {exc}; nothing was changed"
                ) from exc

        audit = AuditRecord(
            at=now,
            actor=actor,
            kind=AuditKind.DEVICE,
            action="decommissioned",
            subject=device_id,
            city=record.city,
            detail={"site": record.site_id},
        )
        self.stores.registry.decommission(device_id, now, [audit], on_broker)
        self._revoked(device_id, decommissioned=True)
        return self.stores.registry.devices([device_id])[device_id]

    def _record(self, device_id: str) -> DeviceRecord:
        record = self.stores.registry.devices([device_id]).get(device_id)
        if record is None:
            raise UnknownObject(f"no device {device_id!r}")
        return record

    def _revoked(self, device_id: str, *, decommissioned: bool) -> None:
        if self.on_revoked is None:
            return
        try:
            self.on_revoked(device_id, decommissioned)
        except Exception:
            log.exception("device %s: could not mark it offline on the broker", device_id)


def _vendor_of(record: DeviceRecord) -> Scope | None:
    """A registered third-party device's own vendor topics (None: a native device)."""
    if record.adapter == "native":
        return None
    topics = adapter_of(record.adapter, record.config).topics
    return Scope(topics.reports, topics.commands)


def build_registrar(
    settings: Settings,
    stores: Stores,
    *,
    accounts: DeviceAccounts | None = None,
    embedded_url: str | None = None,
    on_revoked: Revoked | None = None,
) -> Registrar:
    """The registrar of these settings. It provisions the device accounts:

    - in the controller's own accounts (`LocalAccounts`, data_dir/broker-accounts.sqlite)
      when the controller keeps them: for the embedded broker (no broker.url), or a broker
      that asks the broker hook (broker_hook.token); `accounts` gives the running
      controller's;
    - else through Mosquitto's dynamic-security plugin when
      `broker.dynsec_admin_username` is set;
    - else not at all (the operator keeps the broker's accounts)."""
    from controller.broker.dynsec import DynsecAccounts
    from controller.broker.local_accounts import LocalAccounts

    if accounts is None and (settings.broker.url is None or settings.broker_hook.token):
        accounts = LocalAccounts.in_folder(settings.data_dir, settings.topics)
    admin = settings.broker.dynsec_admin()
    if accounts is None and admin is not None:
        ca_file = settings.broker.ca_file
        accounts = DynsecAccounts(
            admin,
            settings.topics,
            ca_file=str(ca_file) if ca_file else None,
            controller_role=settings.broker.username,
        )
    return Registrar(
        stores,
        settings.topics,
        settings.broker.device_endpoint(embedded_url),
        accounts,
        on_revoked,
    )
