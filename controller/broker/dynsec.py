"""`DeviceAccounts` on Mosquitto's dynamic-security plugin (Mosquitto 2.0 and later).

The controller logs in with a dynsec admin account (the one `mosquitto_ctrl dynsec init`
creates; see deploy/mosquitto/README.md) and sends JSON commands to
`$CONTROL/dynamic-security/v1`; the plugin answers on `.../v1/response`. Every device
gets one client and one role (dynsec 2.0 has no `%u` substitution in role ACLs):

- the client: username = device id, its password, and `clientid` = device id. The
  plugin then refuses any CONNECT whose client id differs, so a device logged in with
  its own password still cannot take another device's client id and knock it offline
  (the broker checks credentials before it takes a client id over);
- the role `illuminate-device-<id>`: the rights of `device_acls` (a third-party
  controller's: `scoped_acls`, its vendor topics only).

A third-party controller speaks on its vendor's topics, outside the topic root, so the
controller's own role (`controller_role`, by default its username, as
deploy/mosquitto/README.md makes it) is given those exact topics with the device's
account: it may subscribe to the device's reports and publish its commands. They are
kept when the account is deleted (a Zigbee2MQTT bridge's topics serve several lights).

What the plugin does on each command, measured on Mosquitto 2.0.11:
- `setClientPassword` closes the connections made with that username ("Administrative
  action"), and the old password is refused from then on;
- `disableClient` and `deleteClient` close them too, and refuse new logins.

Each call opens its own short connection (registrations and rotations are rare), so
there is no link to keep alive, and a broker outage shows as a clear `AccountError`.
The plugin saves its state to its own file after every change.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from controller.broker.accounts import (
    AccountError,
    AccountExists,
    AccountNotFound,
    Acl,
    AclType,
    Scope,
    account_acls,
    check_password,
    decide,
    is_filter,
    role_name,
)
from devices.connection import BrokerAddress, new_client
from devices.protocol import Topics, check_device_id

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"

_CLIENT_EXISTS = "Client already exists"
_CLIENT_NOT_FOUND = "Client not found"
_ROLE_NOT_FOUND = "Role not found"
_ACL_EXISTS = "ACL with this topic already exists"


@dataclass(frozen=True)
class Reply:
    command: str
    error: str | None
    data: dict[str, Any]


class _Exchange:
    """One connection: subscribe to the answers, send one batch, collect its replies.

    The paho callbacks only record and signal; the caller's thread waits on `done`.
    """

    def __init__(self, commands: list[dict[str, Any]], tag: str) -> None:
        self.commands = commands
        self.tag = tag
        self.replies: dict[int, Reply] = {}
        self.failure: str | None = None
        self.done = threading.Event()

    def on_connect(self, client: mqtt.Client, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        if code.is_failure:
            self.fail(f"the broker refused the dynsec admin login: {code}")
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def on_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any
    ) -> None:
        if any(code.is_failure for code in codes):
            self.fail(
                f"the broker refused the subscription to {RESPONSE_TOPIC}: is this account "
                "a dynsec admin (mosquitto_ctrl dynsec init)?"
            )
            return
        client.publish(CONTROL_TOPIC, json.dumps({"commands": self.commands}), qos=1)

    def on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
            responses = body["responses"]
        except (ValueError, KeyError, TypeError):
            return  # not an answer we can read: not ours
        for item in responses if isinstance(responses, list) else ():
            if not isinstance(item, dict):
                continue
            corr = item.get("correlationData")
            if not isinstance(corr, str) or not corr.startswith(self.tag + ":"):
                continue
            try:
                index = int(corr.rpartition(":")[2])
            except ValueError:
                continue
            error, data = item.get("error"), item.get("data")
            self.replies[index] = Reply(
                str(item.get("command")),
                str(error) if error is not None else None,
                data if isinstance(data, dict) else {},
            )
        if len(self.replies) >= len(self.commands):
            self.done.set()

    def on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        if not self.done.is_set():
            self.fail(f"the broker closed the dynsec admin connection: {code}")

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.done.set()


class DynsecAccounts:
    """`DeviceAccounts` through the dynamic-security plugin of a Mosquitto broker.

    `admin` is the broker address with the dynsec admin's username and password
    (TLS with `mqtts://`; `ca_file` verifies the broker's certificate).
    """

    def __init__(
        self,
        admin: BrokerAddress,
        topics: Topics,
        *,
        ca_file: str | None = None,
        timeout: float = 10.0,
        controller_role: str | None = None,
    ) -> None:
        if not admin.username or not admin.password:
            raise ValueError("the dynsec admin needs a username and a password")
        self._admin = admin
        self.controller_role = controller_role
        """The controller's own role: given each third-party device's vendor topics."""
        self._topics = topics
        self._ca_file = ca_file
        self._timeout = timeout

    # --- DeviceAccounts

    def create(self, device_id: str, password: str, scope: Scope | None = None) -> None:
        check_device_id(device_id)
        check_password(password)
        if scope is not None and self.controller_role is None:
            raise AccountError(
                "a third-party device needs the controller's role on the broker: "
                "set broker.username (the controller's dynsec role)"
            )
        if self.exists(device_id):
            raise AccountExists(f"device account {device_id!r} already exists on the broker")
        role = role_name(device_id)
        # no client of this name exists, so a role of this name is a leftover of an
        # interrupted create: replace it, so the rights are exactly device_acls
        deleted, created_role, created_client = self.run(
            [
                {"command": "deleteRole", "rolename": role},
                {
                    "command": "createRole",
                    "rolename": role,
                    "textname": f"Illuminate device {device_id}",
                    "acls": [acl.as_json() for acl in account_acls(self._topics, device_id, scope)],
                },
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "clientid": device_id,
                    "textname": f"Illuminate device {device_id}",
                    "roles": [{"rolename": role}],
                },
            ]
        )
        if created_client.error == _CLIENT_EXISTS:
            raise AccountExists(f"device account {device_id!r} already exists on the broker")
        _raise_for(deleted, allowed=(_ROLE_NOT_FOUND,))
        _raise_for(created_role)
        _raise_for(created_client)
        if scope is not None:
            self._grant_controller(scope)

    def _grant_controller(self, scope: Scope) -> None:
        """Give the controller's role a device's vendor topics: subscribe to its reports,
        publish its commands (a bridge's one filter, `<base>/#`, both ways). They stay
        when the device is decommissioned (a bridge's topics may serve other lights
        still).

        The broker closes the connections of every client whose role changes, the
        controller's included, so the role is read first and only the rights it lacks
        are added: the second light behind a bridge, or a device under a prefix the
        operator granted once (`wled/#`, deploy/mosquitto/README.md), changes nothing."""
        role = self.controller_role
        if role is None:
            return
        wanted = [
            *(
                Acl(
                    AclType.SUBSCRIBE_PATTERN if is_filter(topic) else AclType.SUBSCRIBE_LITERAL,
                    topic,
                )
                for topic in scope.reports
            ),
            *(Acl(AclType.PUBLISH_SEND, topic) for topic in scope.commands),
        ]
        (found,) = self.run([{"command": "getRole", "rolename": role}])
        if found.error == _ROLE_NOT_FOUND:
            raise AccountError(
                f"the controller's role {role!r} is not on the broker "
                "(deploy/mosquitto/README.md makes it)"
            )
        _raise_for(found)
        held = _role_acls(found.data)
        batch = []
        for acl in wanted:
            if _granted(held, acl):
                continue
            batch.append(
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": acl.kind.value,
                    "topic": acl.topic,
                    "priority": acl.priority,
                    "allow": True,
                }
            )
        if not batch:
            return
        for reply in self.run(batch):
            if reply.error == _ACL_EXISTS:
                continue  # another registration gave it meanwhile
            _raise_for(reply)

    def rotate(self, device_id: str, password: str) -> None:
        check_device_id(device_id)
        check_password(password)
        (reply,) = self.run(
            [{"command": "setClientPassword", "username": device_id, "password": password}]
        )
        _raise_for(reply, device_id=device_id)

    def disable(self, device_id: str) -> None:
        check_device_id(device_id)
        (reply,) = self.run([{"command": "disableClient", "username": device_id}])
        _raise_for(reply, device_id=device_id)

    def delete(self, device_id: str) -> bool:
        check_device_id(device_id)
        client, role = self.run(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": role_name(device_id)},
            ]
        )
        _raise_for(client, allowed=(_CLIENT_NOT_FOUND,))
        _raise_for(role, allowed=(_ROLE_NOT_FOUND,))
        return client.error is None

    def exists(self, device_id: str) -> bool:
        check_device_id(device_id)
        (reply,) = self.run([{"command": "getClient", "username": device_id}])
        _raise_for(reply, allowed=(_CLIENT_NOT_FOUND,))
        return reply.error is None

    # --- the transport

    def run(self, commands: Sequence[dict[str, Any]]) -> list[Reply]:
        """Send one batch of dynsec commands; their replies, in order."""
        tag = secrets.token_hex(8)
        batch = [dict(cmd, correlationData=f"{tag}:{i}") for i, cmd in enumerate(commands)]
        exchange = _Exchange(batch, tag)
        client = new_client(self._admin, f"illuminate-dynsec-{tag}", ca_file=self._ca_file)
        client.on_connect = exchange.on_connect
        client.on_subscribe = exchange.on_subscribe
        client.on_message = exchange.on_message
        client.on_disconnect = exchange.on_disconnect
        where = self._admin.redacted()
        try:
            client.connect(self._admin.host, self._admin.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise AccountError(f"cannot reach the broker at {where}: {exc}") from exc
        client.loop_start()
        try:
            if not exchange.done.wait(self._timeout):
                raise AccountError(
                    f"the broker at {where} did not answer the dynsec commands within "
                    f"{self._timeout:g} s: is the dynamic-security plugin loaded?"
                )
        finally:
            client.on_disconnect = None
            client.disconnect()
            client.loop_stop()
        if exchange.failure is not None:
            raise AccountError(f"{where}: {exchange.failure}")
        return [exchange.replies[i] for i in range(len(batch))]


def _role_acls(data: dict[str, Any]) -> tuple[Acl, ...]:
    """The ACLs of a `getRole` answer (`{"role": {"acls": [...]}}`); unreadable ones
    are left out (so they are added again, which the broker answers 'exists')."""
    role = data.get("role")
    items = role.get("acls") if isinstance(role, dict) else None
    out = []
    for item in items if isinstance(items, list) else ():
        try:
            out.append(
                Acl(
                    AclType(item["acltype"]),
                    str(item["topic"]),
                    bool(item.get("allow", False)),
                    int(item.get("priority", 0)),
                )
            )
        except (KeyError, ValueError, TypeError):
            continue
    return tuple(out)


def _granted(held: tuple[Acl, ...], acl: Acl) -> bool:
    """Does the role already allow what `acl` allows? Decided as the broker decides."""
    if acl.kind is AclType.SUBSCRIBE_LITERAL and decide(
        held, AclType.SUBSCRIBE_LITERAL, acl.topic, default=False
    ):
        return True
    kind = AclType.PUBLISH_SEND if acl.kind is AclType.PUBLISH_SEND else AclType.SUBSCRIBE_PATTERN
    return decide(held, kind, acl.topic, default=False)


def _raise_for(
    reply: Reply, *, allowed: tuple[str, ...] = (), device_id: str | None = None
) -> None:
    if reply.error is None or reply.error in allowed:
        return
    if reply.error == _CLIENT_NOT_FOUND:
        raise AccountNotFound(f"no device account {device_id!r} on the broker")
    raise AccountError(f"dynsec {reply.command} refused: {reply.error}")
