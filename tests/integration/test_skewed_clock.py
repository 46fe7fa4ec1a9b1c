"""A real agent process whose clock runs 90 s ahead (libfaketime) switches on the
controller's time: the controller's beacon tells it the offset, the controller flags
its clock to staff, and the window's step is applied at the controller's second, not
90 s early. Real controller, real Mosquitto, real `illuminate agent`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.registration import hash_generated_secret
from controller.store.base import NewDevice
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SKEW_S = 90
TOLERANCE_S = 1.0  # control.clock_tolerance_ms, by default


def libfaketime() -> Path | None:
    for folder in (*Path("/usr/lib").glob("*-linux-gnu"), Path("/usr/lib"), Path("/usr/local/lib")):
        candidate = folder / "faketime" / "libfaketimeMT.so.1"
        if candidate.is_file():
            return candidate
    return None


def test_an_agent_90_s_ahead_switches_on_the_controllers_second(rig_factory, tmp_path) -> None:
    lib = libfaketime()
    if lib is None:
        pytest.skip("libfaketime is missing (make test installs it)")
    rig = rig_factory(1)
    control = rig.settings.control.model_copy(update={"clock_beacon_s": 1.0})
    rig.settings = rig.settings.model_copy(update={"control": control})
    controller = rig.start_controller()
    device = rig.devices[0]
    stores = controller.stores
    stores.registry.import_catalog(rig.sites)
    stores.registry.add_devices(
        [NewDevice(device.id, rig.sites.sites[0].id, hash_generated_secret(device.password))],
        datetime.now(UTC),
    )
    controller.changed()
    env = {
        **os.environ,
        "LD_PRELOAD": str(lib),
        "FAKETIME": f"+{SKEW_S}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "illuminate"),
            "agent",
            "--broker",
            str(rig.settings.broker.url),
            "--id",
            device.id,
            "--password",
            device.password,
            "--state-file",
            str(tmp_path / "agent.json"),
            "--clock-settle-s",
            "2",  # beacons come every second here (below): trust them after two
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # the agent comes online, the controller's beacon tells it its offset, it
        # reports it, and the controller flags its clock to staff
        assert wait_until(lambda: device.id in controller.clock_watch.off(), timeout=DEADLINE)
        offset = controller.clock_watch.off()[device.id]
        assert abs(offset + SKEW_S * 1000) < TOLERANCE_S * 1000
        flagged = controller.metrics.registry.get_sample_value("illuminate_devices_clock_off_total")
        assert flagged == 1

        # a window opens 8 s from now by the controller's clock: 82 s ago by the agent's
        opens = whole_second(8)
        stores.campaigns.put(window_campaign(opens, opens + timedelta(minutes=5)), opens)
        controller.changed()
        seen: list[datetime] = []

        def applied() -> bool:
            view = stores.reports.views([device.id])[device.id]
            if view.applied_step_at == opens and not seen:
                seen.append(datetime.now(UTC))
            return bool(seen)

        assert wait_until(applied, timeout=DEADLINE, step=0.02)
        # not early: the agent did not switch by its own clock (that would be at once)
        assert seen[0] >= opens - timedelta(seconds=TOLERANCE_S)
        view = stores.reports.views([device.id])[device.id]
        assert view.applied_state is not None and view.applied_state["on"] is True
        # it stamps the apply in the controller's time, at the step's second
        assert view.applied_at is not None
        assert abs((view.applied_at - opens).total_seconds()) < TOLERANCE_S
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=DEADLINE)
        finally:
            log.close()
            if agent.returncode is None:
                agent.kill()
    print((tmp_path / "agent.log").read_text())
