"""The fleet simulator: the spec (unit tests) and fleets on a real Mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.agent import Behaviour
from devices.appliedlog import read_applied
from devices.connection import BrokerAddress
from devices.planstore import FilePlanStore, MemoryPlanStore
from devices.protocol import Stage
from devices.simulator import Fleet, FleetSpec, SimDevice
from tests.devices.harness import BLUE, RED, TestController, in_effect
from tests.support.mosquitto import Mosquitto


def test_generate_names_devices_in_order() -> None:
    spec = FleetSpec.generate(3, "pw", prefix="bxl-")
    assert [d.id for d in spec.devices] == ["bxl-001", "bxl-002", "bxl-003"]
    assert {d.password for d in spec.devices} == {"pw"}
    assert all(d.behaviour == Behaviour() and d.start_offline_s is None for d in spec.devices)
    assert FleetSpec.generate(1000, "pw").devices[-1].id == "sim-1000"


@pytest.mark.parametrize(("count", "prefix"), [(0, "sim-"), (3, "Sim-"), (3, "a/b-"), (3, "-x")])
def test_generate_refuses_bad_input(count: int, prefix: str) -> None:
    with pytest.raises(ValueError):
        FleetSpec.generate(count, "pw", prefix=prefix)


def test_knobs_take_disjoint_groups_in_order() -> None:
    spec = FleetSpec.generate(6, "pw").with_knobs(
        offline=2, silent=1, late=1, reject=1, offline_s=3, late_s=2, reject_reason="nope"
    )
    d = spec.devices
    assert [x.start_offline_s for x in d] == [3, 3, None, None, None, None]
    assert [x.behaviour.ack for x in d] == ["normal", "normal", "never", "late", "reject", "normal"]
    assert d[3].behaviour.ack_delay_s == 2
    assert d[4].behaviour.reject_reason == "nope"


def test_knobs_cannot_ask_for_more_devices_than_there_are() -> None:
    spec = FleetSpec.generate(3, "pw")
    with pytest.raises(ValueError, match="4 devices"):
        spec.with_knobs(offline=2, silent=2)
    with pytest.raises(ValueError, match="negative"):
        spec.with_knobs(late=-1)


def test_load_reads_json_and_yaml(tmp_path: Path) -> None:
    devices = [
        {"id": "a-1", "password": "p1"},
        {"id": "a-2", "password": "p2", "start_offline_s": 5, "behaviour": {"ack": "late"}},
    ]
    (tmp_path / "fleet.json").write_text(json.dumps(devices))
    (tmp_path / "fleet.yaml").write_text(
        "devices:\n"
        "  - {id: a-1, password: p1}\n"
        "  - id: a-2\n"
        "    password: p2\n"
        "    start_offline_s: 5\n"
        "    behaviour: {ack: late}\n"
    )
    for name in ("fleet.json", "fleet.yaml"):
        spec = FleetSpec.load(tmp_path / name)
        assert [d.id for d in spec.devices] == ["a-1", "a-2"]
        assert spec.devices[1].behaviour.ack == "late"
        assert spec.devices[1].start_offline_s == 5


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[{"id": "a-1", "password": "p", "colour": "red"}]', "colour"),
        ('[{"id": "a-1", "password": "p"}, {"id": "a-1", "password": "q"}]', "more than once"),
        ('[{"id": "A-1", "password": "p"}]', "invalid device id"),
        ('[{"id": "a-1", "password": "p", "behaviour": {"ack": "sometimes"}}]', "ack"),
        ('[{"id": "a-1", "password": "p", "start_offline_s": -1}]', "start_offline_s"),
        ("[]", "devices"),
        ("{not json", "not valid"),
    ],
)
def test_load_refuses_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        FleetSpec.load(path)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        FleetSpec.load(tmp_path / "nope.yaml")


def test_sim_device_refuses_extra_keys() -> None:
    with pytest.raises(ValueError):
        SimDevice.model_validate({"id": "a", "password": "p", "extra": 1})


# ---------------------------------------------------------------------- with a broker


@pytest.fixture
def run_fleet(mosquitto: Mosquitto) -> Iterator[list[Fleet]]:
    """Collects fleets to stop at the end of the test."""
    fleets: list[Fleet] = []
    try:
        yield fleets
    finally:
        for fleet in fleets:
            fleet.stop()


def start(
    mosquitto: Mosquitto, spec: FleetSpec, fleets: list[Fleet], state_dir: Path | None = None
) -> Fleet:
    mosquitto.add_users({d.id: d.password for d in spec.devices})
    fleet = Fleet(spec, BrokerAddress.parse(mosquitto.url), state_dir=state_dir)
    fleets.append(fleet)
    fleet.start()
    return fleet


@pytest.mark.broker
def test_fleet_of_twenty_each_on_its_own_connection(
    mosquitto: Mosquitto, controller: TestController, run_fleet: list[Fleet]
) -> None:
    spec = FleetSpec.generate(20, "pw")
    spec = FleetSpec(
        devices=[d.model_copy(update={"password": f"pw-{d.id}"}) for d in spec.devices]
    )
    fleet = start(mosquitto, spec, run_fleet)
    assert fleet.wait_started(15)
    assert fleet.connected_count() == 20
    ids = [d.id for d in spec.devices]
    assert sorted(a.client_id for a in fleet.agents.values()) == ids
    for device_id in ids:
        controller.send_plan(device_id, in_effect(1))
    # the ACL lets a device write only its own ack topic: an ack on every device's
    # topic means every device connected with its own credentials
    for device_id in ids:
        got = controller.wait_ack(device_id, 1, Stage.APPLIED, timeout=10)
        assert got is not None, device_id
        assert got[0].device == device_id
        assert controller.wait_status(device_id, online=True)
    assert all(f.current == BLUE for f in fleet.fixtures.values())

    fleet.stop()
    assert fleet.connected_count() == 0
    for device_id in ids:
        assert controller.wait_status(device_id, online=False), device_id


@pytest.mark.broker
def test_offline_start_device_connects_later_and_gets_the_retained_plan(
    mosquitto: Mosquitto, controller: TestController, run_fleet: list[Fleet]
) -> None:
    spec = FleetSpec(
        devices=[
            SimDevice(id="early", password="pw"),
            SimDevice(id="late-comer", password="pw", start_offline_s=1.5),
        ]
    )
    began = time.monotonic()
    fleet = start(mosquitto, spec, run_fleet)
    assert fleet.wait_started(10)
    assert not fleet.agents["late-comer"].connected
    controller.send_plan("late-comer", in_effect(1))  # retained, waits at the broker
    controller.send_plan("early", in_effect(1))
    assert controller.wait_ack("early", 1, Stage.APPLIED)
    assert controller.acks("late-comer") == []

    got = controller.wait_ack("late-comer", 1, Stage.APPLIED, timeout=10)
    assert got is not None
    assert got[1] - began >= 1.5
    assert [a.stage for a in controller.acks("late-comer")] == [
        Stage.RECEIVED,
        Stage.ARMED,
        Stage.APPLIED,
    ]
    assert fleet.wait_started(5, include_offline=True)


@pytest.mark.broker
def test_fleet_knobs_on_the_wire(
    mosquitto: Mosquitto, controller: TestController, run_fleet: list[Fleet]
) -> None:
    spec = FleetSpec.generate(4, "pw").with_knobs(silent=1, late=1, reject=1, late_s=0.5)
    fleet = start(mosquitto, spec, run_fleet)
    assert fleet.wait_started(10)
    silent, late, reject, normal = (d.id for d in spec.devices)
    for device_id in (silent, late, reject, normal):
        controller.send_plan(device_id, in_effect(1))
    assert controller.wait_ack(normal, 1, Stage.APPLIED)
    assert controller.wait_ack(reject, 1, Stage.REJECTED)
    assert controller.wait_ack(late, 1, Stage.APPLIED)
    assert fleet.agents[silent].wait_applied(1, 5)
    assert controller.acks(silent) == []
    assert fleet.fixtures[reject].history == []


@pytest.mark.broker
def test_stopping_a_fleet_before_its_late_devices_start(
    mosquitto: Mosquitto, run_fleet: list[Fleet]
) -> None:
    spec = FleetSpec(devices=[SimDevice(id="never-on", password="pw", start_offline_s=60)])
    fleet = start(mosquitto, spec, run_fleet)
    assert fleet.wait_started(1)  # nothing to wait for
    began = time.monotonic()
    fleet.stop()
    assert time.monotonic() - began < 2
    assert not fleet.agents["never-on"].connected


def test_a_fleet_keeps_plans_in_memory_unless_given_a_folder(tmp_path: Path) -> None:
    spec = FleetSpec.generate(2, "pw")
    address = BrokerAddress.parse("mqtt://127.0.0.1:1")
    assert all(isinstance(s, MemoryPlanStore) for s in Fleet(spec, address).stores.values())
    stores = Fleet(spec, address, state_dir=tmp_path).stores
    assert sorted(s.path.name for s in stores.values() if isinstance(s, FilePlanStore)) == [
        "sim-001.json",
        "sim-002.json",
    ]


@pytest.mark.broker
def test_a_fleet_restarted_on_its_state_folder_resumes_and_refuses_older_plans(
    mosquitto: Mosquitto, controller: TestController, run_fleet: list[Fleet], tmp_path: Path
) -> None:
    spec = FleetSpec.generate(3, "pw")
    ids = [d.id for d in spec.devices]
    fleet = start(mosquitto, spec, run_fleet, state_dir=tmp_path)
    assert fleet.wait_started(10)
    for device_id in ids:
        controller.send_plan(device_id, in_effect(2))
    for device_id in ids:
        assert fleet.agents[device_id].wait_applied(2, 10)
    fleet.stop()
    for device_id in ids:
        controller.send_plan(device_id, in_effect(1, RED))  # older, retained

    again = start(mosquitto, spec, run_fleet, state_dir=tmp_path)
    assert all(f.current == BLUE for f in again.fixtures.values())  # from the files, at once
    assert again.wait_started(10)
    for device_id in ids:
        agent = again.agents[device_id]
        assert agent.wait_for(lambda a=agent: a.stale_plans == 1, 10), device_id
        assert agent.plan_version == 2 and agent.applied == []
    assert all(f.current == BLUE for f in again.fixtures.values())


@pytest.mark.broker
def test_an_applied_log_records_each_application_once_across_a_restart(
    mosquitto: Mosquitto, controller: TestController, tmp_path: Path
) -> None:
    """Every step set on a fixture is one line; a step shown again from the stored plan
    after a restart is not a new application and adds none."""
    spec = FleetSpec.generate(2, "pw")
    ids = [d.id for d in spec.devices]
    mosquitto.add_users({d.id: d.password for d in spec.devices})
    log = tmp_path / "logs" / "applied.jsonl"
    address = BrokerAddress.parse(mosquitto.url)
    fleet = Fleet(spec, address, state_dir=tmp_path / "state", applied_log=log, keepalive_s=7)
    try:
        fleet.start()
        assert fleet.wait_started(10)
        for device_id in ids:
            controller.send_plan(device_id, in_effect(3))
        for device_id in ids:
            assert fleet.agents[device_id].wait_applied(3, 10)
    finally:
        fleet.stop()
    again = Fleet(spec, address, state_dir=tmp_path / "state", applied_log=log)
    try:
        again.start()
        assert again.wait_started(10)
        controller.send_plan(ids[0], in_effect(4, RED))
        assert again.agents[ids[0]].wait_applied(4, 10)
    finally:
        again.stop()
    lines = read_applied(log)
    assert sorted((s.device, s.version) for s in lines) == [
        (ids[0], 3),
        (ids[0], 4),
        (ids[1], 3),
    ]
    assert lines[-1].device == ids[0] and lines[-1].version == 4 and lines[-1].state == RED
    assert all(s.applied_at >= s.step_at for s in lines)
