"""The device host on a real Mosquitto: one loop thread, paced connects, missing devices
reported with their reasons."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from devices.connection import BrokerAddress
from devices.host import ConnectionSummary
from devices.pacing import Backoff, Pacing
from devices.simulator import Fleet, FleetSpec, SimDevice
from tests.support.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.broker

QUICK_RETRY = Pacing(backoff=Backoff(initial=0.2, cap=0.5))


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    try:
        yield made
    finally:
        for fleet in made:
            fleet.stop()


def wait_summary(fleet: Fleet, done: object, timeout: float = 30.0) -> ConnectionSummary:
    deadline = time.monotonic() + timeout
    summary = fleet.summary()
    while time.monotonic() < deadline:
        summary = fleet.summary()
        if done(summary):  # type: ignore[operator]
            return summary
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {summary.line()}")


def test_a_fleet_runs_on_one_loop_thread(mosquitto: Mosquitto, fleets: list[Fleet]) -> None:
    spec = FleetSpec.generate(40, "pw")
    mosquitto.add_users({d.id: d.password for d in spec.devices})
    before = threading.active_count()
    fleet = Fleet(spec, BrokerAddress.parse(mosquitto.url))
    fleets.append(fleet)
    fleet.start()
    assert fleet.wait_started(60)
    assert threading.active_count() == before + 1
    assert fleet.summary() == ConnectionSummary(total=40, online=40)
    fleet.stop()
    assert threading.active_count() == before
    assert fleet.summary().phases == {"stopped": 40}


def test_refused_credentials_are_reported_as_the_connack_reason(
    mosquitto: Mosquitto, fleets: list[Fleet]
) -> None:
    good = [SimDevice(id=f"good-{n}", password="pw") for n in range(3)]
    bad = [SimDevice(id=f"bad-{n}", password="wrong") for n in range(2)]
    mosquitto.add_users({d.id: "pw" for d in good + bad})
    fleet = Fleet(
        FleetSpec(devices=good + bad), BrokerAddress.parse(mosquitto.url), pacing=QUICK_RETRY
    )
    fleets.append(fleet)
    fleet.start()
    summary = wait_summary(
        fleet, lambda s: s.online == 3 and s.phases == {"waiting to retry": 2}, timeout=60
    )
    assert summary.reasons == {"connack refused: Not authorized": 2}
    assert "2 waiting to retry (2 connack refused: Not authorized)" in summary.line()
    # they keep retrying: once the broker knows the password they come online
    attempts = fleet.agents["bad-0"].attempts
    mosquitto.add_users({d.id: "wrong" for d in bad})
    assert fleet.wait_started(60)
    assert fleet.agents["bad-0"].attempts > attempts


def test_an_unreachable_broker_is_reported_as_the_socket_error(fleets: list[Fleet]) -> None:
    spec = FleetSpec.generate(3, "pw")
    fleet = Fleet(spec, BrokerAddress("127.0.0.1", free_port()), pacing=QUICK_RETRY)
    fleets.append(fleet)
    fleet.start()
    summary = wait_summary(fleet, lambda s: s.reasons.get("socket error: Connection refused") == 3)
    assert summary.online == 0
    assert all(fleet.agents[d.id].attempts >= 1 for d in spec.devices)


def test_devices_held_back_by_the_connect_rate_are_not_yet_tried(fleets: list[Fleet]) -> None:
    spec = FleetSpec.generate(5, "pw")
    slow = Pacing(rate=0.001, burst=1)  # one attempt now, the next in 1000 s
    fleet = Fleet(spec, BrokerAddress("127.0.0.1", free_port()), pacing=slow)
    fleets.append(fleet)
    fleet.start()
    summary = wait_summary(fleet, lambda s: s.phases.get("waiting to retry") == 1)
    assert summary.phases == {"waiting to retry": 1, "not yet tried": 4}
    assert [fleet.agents[d.id].attempts for d in spec.devices] == [1, 0, 0, 0, 0]


def test_devices_that_start_offline_are_reported_so(fleets: list[Fleet]) -> None:
    spec = FleetSpec.generate(2, "pw").with_knobs(offline=1, offline_s=600)
    fleet = Fleet(spec, BrokerAddress("127.0.0.1", free_port()), pacing=QUICK_RETRY)
    fleets.append(fleet)
    fleet.start()
    assert fleet.summary().phases["offline by design"] == 1
    began = time.monotonic()
    fleet.stop()
    assert time.monotonic() - began < 5


def test_a_name_with_several_addresses_is_tried_address_by_address(
    mosquitto: Mosquitto, fleets: list[Fleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like `localhost` resolving to ::1 first while the broker listens on 127.0.0.1."""
    import socket

    import devices.connection

    dead, live = ("127.0.0.1", free_port()), ("127.0.0.1", mosquitto.port)

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[object]:
        assert host == "broker.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in (dead, live)]

    monkeypatch.setattr(devices.connection.socket, "getaddrinfo", resolve)
    mosquitto.add_users({"two-way": "pw"})
    spec = FleetSpec(devices=[SimDevice(id="two-way", password="pw")])
    fleet = Fleet(spec, BrokerAddress("broker.example", mosquitto.port), pacing=QUICK_RETRY)
    fleets.append(fleet)
    fleet.start()
    assert fleet.wait_started(30), fleet.summary().line()
    assert fleet.agents["two-way"].attempts == 2
