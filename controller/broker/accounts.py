"""Device accounts on the broker: what the registry asks for, and the rights each gets.

The registry creates a device's account with a password when a technician registers
it, rotates the password on request, and disables or deletes the account when the
device is decommissioned. `DeviceAccounts` is that seam. `DynsecAccounts`
(`controller/broker/dynsec.py`) is the real one, on Mosquitto's dynamic-security
plugin; `MemoryAccounts` (here) is the in-memory one for tests of the callers.
`tests/controller/test_device_accounts.py` runs the same contract on both.

Every account is bound to its device:
- the username is the device id, and so is the only client id it may connect with,
  so no device can connect as another, or knock another offline by taking its id;
- its rights are `device_acls`: it reads only its own `plan` and the controller
  status, and writes only its own `ack`, `state` and `status`; a third-party
  controller's are `scoped_acls`: it receives only its own command topics and writes
  only its own report topics (its adapter's `topics`).

The ACL rules are Mosquitto's dynamic-security rules (`Acl`), so both implementations
grant exactly the same thing: rules are tried by priority, highest first, the first
whose topic matches decides, and with no match publishing and subscribing are refused
and receiving is allowed (the plugin's defaults).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from paho.mqtt.client import topic_matches_sub

from devices.protocol import Topics, check_device_id


class AccountError(RuntimeError):
    """The broker could not do what was asked; the message says what and why."""


class AccountExists(AccountError):
    """A device account with this id is already on the broker."""


class AccountNotFound(AccountError):
    """No device account with this id is on the broker."""


class AclType(StrEnum):
    """Mosquitto dynamic-security ACL types (the `acltype` of its JSON commands)."""

    PUBLISH_SEND = "publishClientSend"
    PUBLISH_RECEIVE = "publishClientReceive"
    SUBSCRIBE_LITERAL = "subscribeLiteral"
    SUBSCRIBE_PATTERN = "subscribePattern"


@dataclass(frozen=True)
class Acl:
    kind: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "acltype": self.kind.value,
            "topic": self.topic,
            "priority": self.priority,
            "allow": self.allow,
        }


def is_filter(topic: str) -> bool:
    """Does `topic` hold an MQTT wildcard (`+` or `#`), so it is a filter, not a topic?"""
    return "+" in topic or "#" in topic


def role_name(device_id: str) -> str:
    """The broker role that holds one device's rights (one role per device)."""
    return f"illuminate-device-{check_device_id(device_id)}"


def device_acls(topics: Topics, device_id: str) -> tuple[Acl, ...]:
    """The rights of one device: its own plan and the controller status in, its own
    ack, state and status out. Subscriptions are literal: the device may subscribe to
    exactly these two filters, not to any wildcard that would cover them. Receiving
    anything else is refused too, so that a rule added by mistake elsewhere cannot
    leak another device's traffic to it."""
    reads = (topics.plan(device_id), topics.controller_status)
    writes = (topics.ack(device_id), topics.state(device_id), topics.status(device_id))
    return (
        *(Acl(AclType.SUBSCRIBE_LITERAL, topic) for topic in reads),
        *(Acl(AclType.PUBLISH_RECEIVE, topic, priority=1) for topic in reads),
        Acl(AclType.PUBLISH_RECEIVE, "#", allow=False, priority=0),
        *(Acl(AclType.PUBLISH_SEND, topic) for topic in writes),
    )


@dataclass(frozen=True)
class Scope:
    """The topics of a third-party controller (`devices/adapters/`): it writes its
    `reports` and reads its `commands`, and nothing else. They are exact topics, except
    a bridge's, which is one filter both ways (`<base>/#`, `devices.adapters.Bridge`)."""

    reports: tuple[str, ...]
    commands: tuple[str, ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.reports, *self.commands)))

    def as_json(self) -> dict[str, list[str]]:
        return {"reports": list(self.reports), "commands": list(self.commands)}

    @classmethod
    def from_json(cls, data: object) -> Scope | None:
        if not isinstance(data, dict):
            return None
        return cls(
            tuple(str(t) for t in data.get("reports", ())),
            tuple(str(t) for t in data.get("commands", ())),
        )


def scoped_acls(scope: Scope) -> tuple[Acl, ...]:
    """The rights of a third-party device: publish exactly its report topics, and
    receive exactly its own topics (its commands, and what it reported itself). It may
    subscribe to any filter (not `$` topics), because firmware subscribes with wildcards
    of its own (Tasmota `cmnd/<topic>/#` and its group topic, WLED its bare device
    topic), but the broker delivers it nothing else."""
    return (
        Acl(AclType.SUBSCRIBE_PATTERN, "#"),
        *(Acl(AclType.PUBLISH_RECEIVE, topic, priority=1) for topic in scope.topics),
        Acl(AclType.PUBLISH_RECEIVE, "#", allow=False, priority=0),
        *(Acl(AclType.PUBLISH_SEND, topic) for topic in scope.reports),
    )


def account_acls(topics: Topics, device_id: str, scope: Scope | None) -> tuple[Acl, ...]:
    """A device's rights: `device_acls` for a native device, `scoped_acls` for one
    with vendor topics."""
    return device_acls(topics, device_id) if scope is None else scoped_acls(scope)


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise ValueError("a device password must be a non-empty string")
    if "\x00" in password:
        raise ValueError("a device password must not contain NUL")
    return password


class DeviceAccounts(Protocol):
    """The broker accounts of devices. Every method raises `ValueError` for an invalid
    device id or password, and `AccountError` when the broker fails or refuses."""

    def create(self, device_id: str, password: str, scope: Scope | None = None) -> None:
        """Create the device's account, bound to its id, with `device_acls` rights (or
        `scoped_acls` for a third-party device's `scope`). Raises `AccountExists` when
        it is already there."""

    def rotate(self, device_id: str, password: str) -> None:
        """Replace the password. The old one stops working at once, and connections
        made with it are closed. Raises `AccountNotFound`."""

    def disable(self, device_id: str) -> None:
        """Refuse every login of the device and close its connections; the account
        stays. Raises `AccountNotFound`."""

    def delete(self, device_id: str) -> bool:
        """Remove the account and its rights, closing its connections. False when
        there was nothing to remove (deleting twice is not an error)."""

    def exists(self, device_id: str) -> bool: ...


def _digest(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 1000)


@dataclass
class _MemoryAccount:
    salt: bytes
    digest: bytes
    acls: tuple[Acl, ...]
    enabled: bool = True


def decide(acls: tuple[Acl, ...], kind: AclType, topic: str, default: bool) -> bool:
    for acl in sorted(acls, key=lambda a: -a.priority):
        if acl.kind is not kind:
            continue
        if kind is AclType.SUBSCRIBE_LITERAL:
            matches = acl.topic == topic
        else:
            matches = topic_matches_sub(acl.topic, topic)
        if matches:
            return acl.allow
    return default


class MemoryAccounts:
    """`DeviceAccounts` in memory, with the login and ACL decisions the broker makes."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics
        self._accounts: dict[str, _MemoryAccount] = {}

    def create(self, device_id: str, password: str, scope: Scope | None = None) -> None:
        check_device_id(device_id)
        check_password(password)
        if device_id in self._accounts:
            raise AccountExists(f"device account {device_id!r} already exists")
        salt = secrets.token_bytes(16)
        self._accounts[device_id] = _MemoryAccount(
            salt, _digest(password, salt), account_acls(self._topics, device_id, scope)
        )

    def rotate(self, device_id: str, password: str) -> None:
        account = self._get(device_id)
        check_password(password)
        account.salt = secrets.token_bytes(16)
        account.digest = _digest(password, account.salt)

    def disable(self, device_id: str) -> None:
        self._get(device_id).enabled = False

    def delete(self, device_id: str) -> bool:
        check_device_id(device_id)
        return self._accounts.pop(device_id, None) is not None

    def exists(self, device_id: str) -> bool:
        check_device_id(device_id)
        return device_id in self._accounts

    # --- the broker's decisions, for tests of callers

    def login(self, username: str, password: str, client_id: str) -> bool:
        """Whether the broker would accept this CONNECT."""
        account = self._accounts.get(username)
        if account is None or not account.enabled or client_id != username:
            return False
        return hmac.compare_digest(account.digest, _digest(password, account.salt))

    def may_publish(self, username: str, topic: str) -> bool:
        return self._may(username, AclType.PUBLISH_SEND, topic, default=False)

    def may_subscribe(self, username: str, topic_filter: str) -> bool:
        account = self._accounts.get(username)
        if account is None:
            return False
        return decide(
            account.acls, AclType.SUBSCRIBE_LITERAL, topic_filter, default=False
        ) or decide(account.acls, AclType.SUBSCRIBE_PATTERN, topic_filter, default=False)

    def may_receive(self, username: str, topic: str) -> bool:
        return self._may(username, AclType.PUBLISH_RECEIVE, topic, default=True)

    def _may(self, username: str, kind: AclType, topic: str, *, default: bool) -> bool:
        account = self._accounts.get(username)
        return account is not None and decide(account.acls, kind, topic, default)

    def _get(self, device_id: str) -> _MemoryAccount:
        check_device_id(device_id)
        account = self._accounts.get(device_id)
        if account is None:
            raise AccountNotFound(f"no device account {device_id!r}")
        return account
