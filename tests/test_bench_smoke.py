"""The bench itself runs end to end: a handful of devices, short waits, real Mosquitto.

It checks that every scenario produced its row and that the run saw what it waited for;
it asserts no timing (the bench reports, it does not judge).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mosquitto import mosquitto_binary

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DEVICES = 5


def test_bench_runs_every_scenario(tmp_path: Path) -> None:
    mosquitto_binary()  # a clear message when Mosquitto is missing
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            *("--devices", str(DEVICES), "--shard-size", "3", "--grace", "2"),
            *("--min-lead", "3", "--timeout", "60", "--no-in-process", "--out", str(out)),
            *("--load-seconds", "0.5", "--load-clients", "4"),
            *("--flood-rate", "200", "--flood-seconds", "2"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["devices"] == DEVICES
    assert set(result["machine"]) >= {"cores", "memory_mib", "python", "mosquitto"}
    assert "error" not in result
    rows = {(r["scenario"], r.get("path")): r for r in result["rows"]}
    for r in result["rows"]:
        assert set(r) >= {"scenario", "devices", "seconds", "floor_seconds", "ratio"}
    for name in ("plan-fanout", "plan-fanout-replace", "step-confirm"):
        got = rows[(name, None)]
        assert got["done"] == DEVICES and got["seconds"] is not None, got
        assert got["floor_seconds"] is not None and got["ratio"] is not None, got
    assert rows[("step-confirm", None)]["lit"] == DEVICES
    assert rows[("sync-spread", None)]["samples"] == DEVICES
    assert rows[("false-unconfirmed", None)]["acked_within_grace"] == DEVICES
    assert rows[("footprint-rss", None)]["rss_mib"] > 0
    assert rows[("footprint-startup", None)]["seconds"] > 0
    restart = rows[("broker-restart", None)]
    assert restart["lost"] == 0 and restart["seconds"] is not None, restart
    assert restart["plans"] == DEVICES and restart["lit"] == DEVICES, restart
    flood = rows[("flood", None)]
    assert flood["probes"] >= 1 and flood["lost"] == 0 and flood["seconds"] is not None, flood
    assert flood["rate"] > 0
    for path in ("200", "304"):
        load = rows[("status-load", path)]
        assert load["clients"] == 4
        assert load["statuses"] == {path: load["statuses"][path]} and load["errors"] == 0, load
        assert set(load["floor_statuses"]) == {path}, load
