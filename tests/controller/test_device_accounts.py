"""The `DeviceAccounts` contract, on the in-memory accounts, the local ones (the embedded
broker's; its own decisions are tested on the broker in test_embedded_spoofing.py) and a
real Mosquitto.

The same cases run on both: what a device may do with its account, and what rotating,
disabling and deleting change. On Mosquitto every decision is the broker's own,
read from its MQTT 5 reason codes (CONNACK, PUBACK, SUBACK).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from controller.broker.accounts import (
    AccountError,
    AccountExists,
    AccountNotFound,
    DeviceAccounts,
    MemoryAccounts,
    device_acls,
)
from controller.broker.dynsec import DynsecAccounts
from controller.broker.local_accounts import LocalAccounts
from devices.connection import BrokerAddress
from devices.protocol import Kind, Topics
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto, free_port
from tests.support.mqtt5 import Probe, can_connect

TOPICS = Topics()


class Decisions(Protocol):
    """What the broker decides for a device logged in with (username, password)."""

    def login(self, username: str, password: str, client_id: str) -> bool: ...

    def may_publish(self, username: str, password: str, topic: str) -> bool: ...

    def may_subscribe(self, username: str, password: str, topic_filter: str) -> bool: ...


class Deciding(Protocol):
    """Accounts that make the broker's decisions themselves (memory and local ones)."""

    def login(self, username: str, password: str, client_id: str) -> bool: ...

    def may_publish(self, username: str, topic: str) -> bool: ...

    def may_subscribe(self, username: str, topic_filter: str) -> bool: ...


@dataclass
class MemoryDecisions:
    accounts: Deciding

    def login(self, username: str, password: str, client_id: str) -> bool:
        return self.accounts.login(username, password, client_id)

    def may_publish(self, username: str, password: str, topic: str) -> bool:
        assert self.accounts.login(username, password, username)
        return self.accounts.may_publish(username, topic)

    def may_subscribe(self, username: str, password: str, topic_filter: str) -> bool:
        assert self.accounts.login(username, password, username)
        return self.accounts.may_subscribe(username, topic_filter)


@dataclass
class BrokerDecisions:
    port: int

    def login(self, username: str, password: str, client_id: str) -> bool:
        return can_connect(self.port, username, password, client_id)

    def may_publish(self, username: str, password: str, topic: str) -> bool:
        with Probe(self.port, username, password, username) as probe:
            assert probe.connect()
            return probe.publish(topic, b"{}")

    def may_subscribe(self, username: str, password: str, topic_filter: str) -> bool:
        with Probe(self.port, username, password, username) as probe:
            assert probe.connect()
            return probe.subscribe(topic_filter)


@dataclass
class Setup:
    accounts: DeviceAccounts
    broker: Decisions


@pytest.fixture(params=["memory", "local", pytest.param("mosquitto", marks=pytest.mark.broker)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "memory":
        memory = MemoryAccounts(TOPICS)
        yield Setup(memory, MemoryDecisions(memory))
        return
    if request.param == "local":  # the embedded broker's and the broker hook's
        local = LocalAccounts.in_folder(tmp_path, TOPICS)
        yield Setup(local, MemoryDecisions(local))
        return
    broker: Mosquitto = request.getfixturevalue("dynsec_mosquitto")
    yield Setup(DynsecAccounts(broker.admin_address, TOPICS), BrokerDecisions(broker.port))


def test_a_device_logs_in_only_as_itself(setup: Setup) -> None:
    setup.accounts.create("dev-a", "secret-a")
    setup.accounts.create("dev-b", "secret-b")
    assert setup.accounts.exists("dev-a")
    assert not setup.accounts.exists("dev-c")
    assert setup.broker.login("dev-a", "secret-a", "dev-a")
    assert not setup.broker.login("dev-a", "secret-a", "dev-b"), "another device's client id"
    assert not setup.broker.login("dev-a", "secret-a", "dev-a-2"), "any other client id"
    assert not setup.broker.login("dev-a", "secret-b", "dev-a"), "another device's password"
    assert not setup.broker.login("dev-b", "secret-a", "dev-b"), "another device's username"
    assert not setup.broker.login("dev-c", "secret-a", "dev-c"), "an unknown username"


def test_a_device_uses_only_its_own_topics(setup: Setup) -> None:
    setup.accounts.create("dev-a", "secret-a")
    setup.accounts.create("dev-b", "secret-b")
    may_publish = setup.broker.may_publish
    may_subscribe = setup.broker.may_subscribe
    for topic in (TOPICS.ack("dev-a"), TOPICS.state("dev-a"), TOPICS.status("dev-a")):
        assert may_publish("dev-a", "secret-a", topic), topic
    for topic in (
        TOPICS.ack("dev-b"),
        TOPICS.state("dev-b"),
        TOPICS.status("dev-b"),
        TOPICS.plan("dev-a"),
        TOPICS.plan("dev-b"),
        TOPICS.controller_status,
    ):
        assert not may_publish("dev-a", "secret-a", topic), topic
    assert may_subscribe("dev-a", "secret-a", TOPICS.plan("dev-a"))
    assert may_subscribe("dev-a", "secret-a", TOPICS.controller_status)
    for topic_filter in (
        "#",
        "illuminate/v1/#",
        TOPICS.device_filter(Kind.PLAN),
        "+/plan",
        TOPICS.plan("dev-b"),
        TOPICS.ack("dev-b"),
        TOPICS.state("dev-a"),
        "$CONTROL/dynamic-security/v1/response",
    ):
        assert not may_subscribe("dev-a", "secret-a", topic_filter), topic_filter


def test_creating_twice_is_refused_and_keeps_the_first_password(setup: Setup) -> None:
    setup.accounts.create("dev-a", "secret-a")
    with pytest.raises(AccountExists):
        setup.accounts.create("dev-a", "other")
    assert setup.broker.login("dev-a", "secret-a", "dev-a")
    assert not setup.broker.login("dev-a", "other", "dev-a")


def test_rotation_replaces_the_password_at_once(setup: Setup) -> None:
    setup.accounts.create("dev-a", "old-secret")
    setup.accounts.rotate("dev-a", "new-secret")
    assert not setup.broker.login("dev-a", "old-secret", "dev-a")
    assert setup.broker.login("dev-a", "new-secret", "dev-a")
    with pytest.raises(AccountNotFound):
        setup.accounts.rotate("dev-x", "new-secret")


def test_a_disabled_or_deleted_device_cannot_log_in(setup: Setup) -> None:
    setup.accounts.create("dev-a", "secret-a")
    setup.accounts.create("dev-b", "secret-b")
    setup.accounts.disable("dev-a")
    assert not setup.broker.login("dev-a", "secret-a", "dev-a")
    assert setup.accounts.delete("dev-b")
    assert not setup.broker.login("dev-b", "secret-b", "dev-b")
    assert not setup.accounts.exists("dev-b")
    assert not setup.accounts.delete("dev-b"), "deleting twice answers False, no error"
    with pytest.raises(AccountNotFound):
        setup.accounts.disable("dev-b")
    # the id is free again: registering it anew gets a fresh account and role
    setup.accounts.create("dev-b", "secret-b2")
    assert setup.broker.login("dev-b", "secret-b2", "dev-b")
    assert setup.broker.may_publish("dev-b", "secret-b2", TOPICS.ack("dev-b"))


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "$sys", "A", "a\x00", "x" * 49, ""])
def test_an_invalid_device_id_is_refused_before_the_broker(setup: Setup, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid device id"):
        setup.accounts.create(bad, "secret")
    with pytest.raises(ValueError, match="invalid device id"):
        setup.accounts.rotate(bad, "secret")
    with pytest.raises(ValueError, match="invalid device id"):
        setup.accounts.delete(bad)


def test_an_empty_password_is_refused(setup: Setup) -> None:
    with pytest.raises(ValueError, match="password"):
        setup.accounts.create("dev-a", "")
    assert not setup.accounts.exists("dev-a")


def test_the_rights_are_exactly_the_devices_own_topics() -> None:
    acls = device_acls(TOPICS, "dev-a")
    named = {acl.topic for acl in acls if acl.allow}
    assert named == {
        TOPICS.plan("dev-a"),
        TOPICS.controller_status,
        TOPICS.ack("dev-a"),
        TOPICS.state("dev-a"),
        TOPICS.status("dev-a"),
    }


@pytest.mark.broker
def test_a_wrong_admin_password_is_a_clear_error(dynsec_mosquitto: Mosquitto) -> None:
    wrong = dynsec_mosquitto.admin_address.with_credentials(None, "not-the-password")
    accounts = DynsecAccounts(wrong, TOPICS, timeout=5)
    with pytest.raises(AccountError, match="refused the dynsec admin login"):
        accounts.create("dev-a", "secret-a")


@pytest.mark.broker
def test_the_controllers_account_cannot_provision(dynsec_mosquitto: Mosquitto) -> None:
    # the controller's data account is bound to its own client id and has no rights on
    # $CONTROL: given to DynsecAccounts by mistake, it is refused with a clear error
    address = BrokerAddress(
        "127.0.0.1", dynsec_mosquitto.port, False, CONTROLLER_USER, CONTROLLER_PASSWORD
    )
    with pytest.raises(AccountError, match="refused the dynsec admin login"):
        DynsecAccounts(address, TOPICS, timeout=5).exists("dev-a")


def test_no_broker_is_a_clear_error() -> None:
    address = BrokerAddress("127.0.0.1", free_port(), False, "illuminate-admin", "pw")
    with pytest.raises(AccountError, match="cannot reach the broker"):
        DynsecAccounts(address, TOPICS, timeout=5).exists("dev-a")
