"""Gates for tests of the embedded broker (see controller/broker/gate.py).

`OpenGate` is for tests of the broker's MQTT behaviour (retained messages, wills,
sessions), not of its security: it admits any client that logs in with a username equal
to its client id and the password `OPEN_PASSWORD`, and lets it use any topic. The
product never uses it: `product_gate` is the product's own, on real local accounts.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from pathlib import Path

from controller.broker.gate import BrokerGate, ControllerAccount
from controller.broker.local_accounts import LocalAccounts
from devices.protocol import Topics
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER

OPEN_PASSWORD = "pw"
CONTROLLER_CLIENT_ID = "illuminate-controller"


class OpenGate:
    def admit(self, username: str, password: str, client_id: str) -> Hashable | None:
        return 0 if username == client_id and password == OPEN_PASSWORD else None

    def stamps(self, usernames: Collection[str]) -> dict[str, Hashable | None]:
        return dict.fromkeys(usernames, 0)

    def revision(self) -> Hashable:
        return 0

    def may_publish(self, username: str, topic: str) -> bool:
        return True

    def may_subscribe(self, username: str, topic_filter: str) -> bool:
        return True

    def may_receive(self, username: str, topic: str) -> bool:
        return True


def product_gate(
    folder: Path, topics: Topics, devices: Mapping[str, str] = {}
) -> tuple[BrokerGate, LocalAccounts]:
    """The product's gate: the controller's account (the tests' controller user and
    password) and local device accounts in `folder`, with `devices` (id: password)."""
    accounts = LocalAccounts.in_folder(folder, topics)
    for device_id, password in devices.items():
        accounts.create(device_id, password)
    login = ControllerAccount(CONTROLLER_USER, CONTROLLER_CLIENT_ID, CONTROLLER_PASSWORD)
    return BrokerGate(login, accounts, topics), accounts
