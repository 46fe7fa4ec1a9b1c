"""Who may connect to the broker, and what each login may do: the broker's own decisions.

The embedded broker (`controller/broker/embedded.py`) asks a `Gate` at every CONNECT,
PUBLISH, SUBSCRIBE and delivery; a broker that delegates its decisions over HTTP
(`controller/web/broker_hook.py`) asks the same one. `BrokerGate` is the product's:

- the controller logs in with its own account (`ControllerAccount`: username, client id
  and a password drawn at start), and may use every topic under the topic root, and
  the vendor topics of the third-party devices' accounts (the device gate's
  `vendor_topics()`, where it has one: exact topics, and a bridge's `<base>/#`);
- a device logs in with its own account from `LocalAccounts`, bound to its id, with the
  rights of `device_acls`;
- nobody else logs in: there are no anonymous clients.

`admit` answers a login with a *stamp*, and `stamps` answers the current stamps of
logged-in users: when a user's stamp changes (its password was rotated, it was disabled
or deleted), the broker closes the connections admitted under the old one.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from paho.mqtt.client import topic_matches_sub

from controller.broker.accounts import is_filter
from devices.protocol import Topics

CONTROLLER_STAMP = "controller"


class Gate(Protocol):
    """The broker's decisions. `username` is the login of an admitted connection."""

    def admit(self, username: str, password: str, client_id: str) -> Hashable | None:
        """A stamp when this CONNECT may log in, None when it is refused."""

    def stamps(self, usernames: Collection[str]) -> dict[str, Hashable | None]:
        """The current stamp of each username (None: it can no longer log in)."""

    def revision(self) -> Hashable:
        """Changes whenever any stamp may have changed."""

    def may_publish(self, username: str, topic: str) -> bool: ...

    def may_subscribe(self, username: str, topic_filter: str) -> bool: ...

    def may_receive(self, username: str, topic: str) -> bool: ...


class DeviceGate(Protocol):
    """The device half of a `Gate` (`LocalAccounts` is one)."""

    def admit(self, username: str, password: str, client_id: str) -> Hashable | None: ...

    def stamps(self, usernames: Collection[str]) -> dict[str, Hashable | None]: ...

    def revision(self) -> Hashable: ...

    def may_publish(self, username: str, topic: str) -> bool: ...

    def may_subscribe(self, username: str, topic_filter: str) -> bool: ...

    def may_receive(self, username: str, topic: str) -> bool: ...


@dataclass(frozen=True)
class ControllerAccount:
    """The controller's own login. `generate` draws a fresh password (192 bits)."""

    username: str
    client_id: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls, username: str, client_id: str) -> ControllerAccount:
        return cls(username, client_id, secrets.token_urlsafe(24))


class BrokerGate:
    """`Gate` for the controller's account and the devices' accounts; see the module."""

    def __init__(
        self,
        controller: ControllerAccount,
        devices: DeviceGate,
        topics: Topics,
    ) -> None:
        self.controller = controller
        self.devices = devices
        self._root = topics.root
        self._split: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())

    def is_controller(self, username: str) -> bool:
        return hmac.compare_digest(username.encode(), self.controller.username.encode())

    def admit(self, username: str, password: str, client_id: str) -> Hashable | None:
        if not username or not client_id or password is None:
            return None
        if self.is_controller(username):
            expected = self.controller.password
            ok = bool(expected) and hmac.compare_digest(password.encode(), expected.encode())
            return CONTROLLER_STAMP if ok and client_id == self.controller.client_id else None
        return self.devices.admit(username, password, client_id)

    def stamps(self, usernames: Collection[str]) -> dict[str, Hashable | None]:
        devices = [u for u in usernames if not self.is_controller(u)]
        out: dict[str, Hashable | None] = dict(self.devices.stamps(devices)) if devices else {}
        out.update({u: CONTROLLER_STAMP for u in usernames if self.is_controller(u)})
        return out

    def revision(self) -> Hashable:
        return self.devices.revision()

    def _vendor(self, topic: str) -> bool:
        """Is `topic` (or an exact filter) one of the third-party devices' topics: one
        of their exact topics, or under a bridge's base topic (`<base>/#`)?"""
        vendor = getattr(self.devices, "vendor_topics", None)
        found: frozenset[str] = vendor() if callable(vendor) else frozenset()
        split = self._split  # one read: another thread may replace it meanwhile
        if found is not split[0]:
            split = (found, tuple(t for t in found if is_filter(t)))
            self._split = split
        if topic in found:
            return not is_filter(topic)
        return any(topic_matches_sub(p, topic) for p in split[1])

    def _under_root(self, topic: str) -> bool:
        return topic_matches_sub(f"{self._root}/#", topic) or self._vendor(topic)

    def may_publish(self, username: str, topic: str) -> bool:
        if self.is_controller(username):
            return self._under_root(topic)
        return self.devices.may_publish(username, topic)

    def may_subscribe(self, username: str, topic_filter: str) -> bool:
        if self.is_controller(username):
            # the root has no wildcards, so a filter that starts with it stays under it;
            # the controller follows exact vendor topics (a wildcard filter is refused)
            if topic_filter.startswith(f"{self._root}/"):
                return True
            return not is_filter(topic_filter) and self._vendor(topic_filter)
        return self.devices.may_subscribe(username, topic_filter)

    def may_receive(self, username: str, topic: str) -> bool:
        if self.is_controller(username):
            return self._under_root(topic)
        return self.devices.may_receive(username, topic)
