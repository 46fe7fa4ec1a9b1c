"""Scenario 8: devices reboot mid-window, with their stored plan and without it.

Half the fleet keeps its plan in a state folder: it relights at once from it, never
applies again what it had applied, and refuses any older plan. The other half comes
back with nothing: it takes the retained plan from the broker and applies the step in
force (a device that forgot everything begins a new life: applying again is right).
Once the campaign changes while they are down, and once nothing changes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from devices.appliedlog import read_applied
from tests.faults.harness import BLUE, RED, Window, count, rig, whole_second


def test_devices_reboot_mid_window_with_and_without_their_stored_plan(tmp_path: Path) -> None:
    with rig(tmp_path, count(200), shards=2, state=True) as r:
        keep, forget = r.shards
        opens = whole_second(1)
        window = [Window(opens, opens + timedelta(minutes=30))]
        r.start(window, BLUE)
        r.verify(1)

        # power cut; the campaign changes while they are down
        r.kill_shard(keep)
        r.kill_shard(forget, forget=True)
        r.put_campaign(window, RED)
        r.start_shard(keep, kept_memory=True)
        r.start_shard(forget, kept_memory=False)
        r.wait_online()
        r.verify(2)

        # power cut again, nothing changes
        r.kill_shard(keep)
        r.kill_shard(forget, forget=True)
        r.start_shard(keep, kept_memory=True)
        r.start_shard(forget, kept_memory=False)
        r.wait_online()
        r.verify(2)

        # what each half applied after each boot
        kept = [read_applied(log) for log, _ in keep.runs]
        forgot = [read_applied(log) for log, _ in forget.runs]
        silent = r.silent_ids
        # with its memory: only the new version after the first boot, nothing after the second
        assert {(s.device, s.version) for s in kept[1]} >= {
            (d, 2) for d in keep.ids if d not in silent
        }
        assert all(s.version == 2 for s in kept[1]), kept[1]
        assert [s for s in kept[2] if s.device not in silent] == []
        # without it: the newest plan's step in force, once per boot
        for run in forgot[1:]:
            assert sorted((s.device, s.version) for s in run) == [(d, 2) for d in forget.ids]
