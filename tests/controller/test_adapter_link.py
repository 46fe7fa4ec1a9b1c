"""The controller's broker link follows third-party devices' exact vendor topics, on a
real Mosquitto with the dynamic-security plugin (a device provisioned with its scope
gives the controller's role its topics, and nothing else outside the root): their
messages reach the sink, a topic the broker refuses is asked for again at the next
`follow`, and one no longer followed is dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.broker.accounts import Scope
from controller.broker.dynsec import DynsecAccounts
from controller.broker.link import PahoBroker
from devices.connection import BrokerAddress
from devices.protocol import Topics
from tests.integration.conftest import DEADLINE, wait_until
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto
from tests.support.mqtt5 import Probe
from tests.support.peer import Sink

pytestmark = pytest.mark.broker


def test_follow_subscribes_retries_a_refusal_and_drops_what_is_no_longer_followed(
    dynsec_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    mosquitto = dynsec_mosquitto
    accounts = DynsecAccounts(mosquitto.admin_address, Topics(), controller_role=CONTROLLER_USER)
    accounts.create("wled-a", "pw-a", Scope(("wled/a/status", "wled/a/g"), ("wled/a/api",)))
    sink = Sink()
    address = BrokerAddress(
        "127.0.0.1", mosquitto.port, False, CONTROLLER_USER, CONTROLLER_PASSWORD
    )
    link = PahoBroker(address, Topics(), CONTROLLER_USER, sink, datetime.now(UTC))
    link.start()
    try:
        assert link.wait_connected(DEADLINE)
        link.follow({"wled/a/g", "refused/x"})  # no device's: the broker refuses it
        assert wait_until(lambda: "refused/x" not in link._follow_held, DEADLINE)
        assert "wled/a/g" in link._follow_held
        with Probe(mosquitto.port, "wled-a", "pw-a", "wled-a") as device:
            assert device.connect()
            assert device.publish("wled/a/g", b"128")
            (got,) = sink.wait_count(1, lambda m: m.topic == "wled/a/g", timeout=DEADLINE)
            assert (got.payload, got.retain) == (b"128", False)
            before = len([r for r in caplog.records if "refused 1 vendor" in r.message])
            link.follow({"wled/a/g", "refused/x"})  # the next tick: asked for again
            assert wait_until(
                lambda: (
                    len([r for r in caplog.records if "refused 1 vendor" in r.message]) > before
                ),
                DEADLINE,
            )
            link.follow(set())  # the device was decommissioned
            assert link._follow_held == set()
            assert device.publish("wled/a/g", b"64", retain=True)
            link.follow({"wled/a/g"})  # followed again: a new SUBSCRIBE brings the retained copy
            sink.wait_count(1, lambda m: m.payload == b"64" and m.retain, timeout=DEADLINE)
    finally:
        link.stop()


def test_thousands_of_vendor_topics_are_followed_in_packets_the_broker_takes(
    mosquitto: Mosquitto,
) -> None:
    """Ten thousand lights' report topics in one SUBSCRIBE would pass the broker's packet
    size limit (the shipped configs have one), and it would drop the controller's
    connection: they go in packets of FOLLOW_CHUNK."""
    topics = {f"wled/light-{n:05d}/g" for n in range(10_000)}
    sink = Sink()
    address = BrokerAddress(
        "127.0.0.1", mosquitto.port, False, CONTROLLER_USER, CONTROLLER_PASSWORD
    )
    link = PahoBroker(address, Topics(), CONTROLLER_USER, sink, datetime.now(UTC))
    link.start()
    try:
        assert link.wait_connected(DEADLINE)
        link.follow(topics)
        with Probe(mosquitto.port, CONTROLLER_USER, CONTROLLER_PASSWORD, "follow-probe") as peer:
            assert peer.connect()
            assert wait_until(lambda: not link._follow_mids, DEADLINE), "SUBACKs missing"
            assert peer.publish("wled/light-09999/g", b"255")
            (got,) = sink.wait_count(1, lambda m: m.topic == "wled/light-09999/g", DEADLINE)
        assert got.payload == b"255"
        assert link.is_connected and link._follow_held == topics
    finally:
        link.stop()
