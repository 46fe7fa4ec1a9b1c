"""One process carries a large fleet: far past the ~340 clients of a thread-per-device
simulator, each device with its own connection and credentials, all acking a plan."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.connection import BrokerAddress
from devices.limits import descriptors_needed, raise_descriptor_limit
from devices.protocol import Ack, Stage, decode
from devices.simulator import Fleet, FleetSpec
from tests.devices.harness import TestController, in_effect
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = 1200


@pytest.fixture
def big_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that may hold the fleet: it inherits this process's descriptor limit,
    so raise that first (one socket per device on each side, and the test's own)."""
    raise_descriptor_limit(descriptors_needed(DEVICES) + 200)
    broker = Mosquitto(tmp_path / "mosquitto")
    spec = FleetSpec.generate(DEVICES, "unused")
    broker.users.update({d.id: f"pw-{d.id}" for d in spec.devices})
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_one_process_connects_a_large_fleet_that_acks_a_plan(big_broker: Mosquitto) -> None:
    generated = FleetSpec.generate(DEVICES, "unused")
    spec = FleetSpec(
        devices=[d.model_copy(update={"password": f"pw-{d.id}"}) for d in generated.devices]
    )
    threads = threading.active_count()
    fleet = Fleet(spec, BrokerAddress.parse(big_broker.url))
    controller = TestController(big_broker)
    try:
        fleet.start()
        assert threading.active_count() <= threads + 2  # the loop (+ the controller's)
        assert fleet.wait_started(120), fleet.summary().line()
        assert fleet.connected_count() == DEVICES

        for device in spec.devices:
            controller.send_plan(device.id, in_effect(1))
        # the ACL lets a device write only its own ack topic: an applied ack on every
        # device's topic means every device is connected with its own credentials
        ids = {d.id for d in spec.devices}
        deadline = time.monotonic() + 120
        acked: set[str] = set()
        while time.monotonic() < deadline and acked != ids:
            time.sleep(0.5)
            for received in controller.messages(lambda r: r.topic.endswith("/ack")):
                ack = decode(Ack, received.payload)
                if ack.stage is Stage.APPLIED and ack.version == 1 and ack.device:
                    assert received.topic == controller.topics.ack(ack.device)
                    acked.add(ack.device)
        assert acked == ids, f"{len(ids - acked)} devices did not ack"
        assert all(fleet.agents[i].plan_version == 1 for i in ids)
    finally:
        fleet.stop(timeout=30)
        controller.close()
    assert fleet.connected_count() == 0
