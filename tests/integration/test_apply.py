"""Applying a campaign, through the API or the CLI, changes what the devices receive."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from controller.cli import main
from devices.protocol import decode
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign
from tests.support.mosquitto import free_port

pytestmark = pytest.mark.broker


def _plan_colors(rig, device_id: str) -> set[str]:
    from devices.protocol import Plan

    row = rig.controller.stores.outbox.latest()[device_id]
    return {s.state.color for s in decode(Plan, row.payload).steps if s.state.on}


def test_put_campaign_reaches_the_devices(rig_factory):
    rig = rig_factory(2)
    controller = rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    fleet = rig.start_fleet()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    version = fleet.agents["dev-01"].plan_version
    token = controller.users.add("ana", "coordinator", [], datetime.now(UTC))

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(controller.web, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, timeout=DEADLINE)
        body = window_campaign(opens, opens + timedelta(seconds=60)).model_dump(mode="json")
        body["color"] = "#FF0000"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            refused = http.put("/api/v1/campaigns/blue-heart", json=body)
            assert refused.status_code == 401
            response = http.put(
                "/api/v1/campaigns/blue-heart",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
        # every device gets a new version, applies it, and the page shows the new colour
        for agent in fleet.agents.values():
            assert agent.wait_for(lambda a=agent: a.plan_version == version + 1, timeout=DEADLINE)
        assert _plan_colors(rig, "dev-01") == {"#FF0000"}
        assert wait_until(
            lambda: {s.color for s in rig.status().sites} == {"#FF0000"}, timeout=DEADLINE
        )
        assert all(f.current.color == "#FF0000" for f in fleet.fixtures.values())
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cli_apply_reaches_the_devices(rig_factory, tmp_path, monkeypatch, capsys):
    rig = rig_factory(2)
    rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    fleet = rig.start_fleet()
    assert wait_until(lambda: set(rig.states().values()) == {"lit"}, timeout=DEADLINE)
    version = fleet.agents["dev-02"].plan_version

    ls = opens.astimezone(rig.sites.cities[0].zone)
    campaign = tmp_path / "override.yaml"
    campaign.write_text(
        f"""id: storm
title: {{en: Storm warning}}
on: false
override: true
reason: severe weather
windows:
  - targets: {{sites: [site-02]}}
    dates: ["{ls.date().isoformat()}"]
    start: {{at: "{ls:%H:%M:%S}"}}
    end: {{at: "{(ls + timedelta(minutes=5)):%H:%M:%S}"}}
"""
    )
    monkeypatch.setenv("ILLUMINATE_DATA_DIR", str(rig.settings.data_dir))
    assert main(["schedules", "apply", str(campaign)]) == 0
    assert "created campaign storm" in capsys.readouterr().out
    # the running controller notices at its next tick; only site-02's device changes
    assert fleet.agents["dev-02"].wait_for(
        lambda: fleet.agents["dev-02"].plan_version == version + 1, timeout=DEADLINE
    )
    assert wait_until(lambda: not fleet.fixtures["dev-02"].current.on, timeout=DEADLINE)
    assert wait_until(lambda: rig.states()["site-02"] == "off", timeout=DEADLINE)
    assert rig.states()["site-01"] == "lit"
    assert fleet.agents["dev-01"].plan_version == version
