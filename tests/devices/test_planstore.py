"""Plan stores: one contract for the file and the memory store, then the file's own faults."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices.planstore import (
    FilePlanStore,
    HeldPlan,
    MemoryPlanStore,
    PlanStore,
    default_state_file,
    write_atomically,
)
from devices.protocol import LightState, Plan, PlanStep

START = datetime(2025, 6, 21, 20, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#1E50FF", level=80)
OFF = LightState(on=False)


def plan(version: int) -> Plan:
    return Plan(
        version=version,
        issued_at=START,
        not_after=START + timedelta(hours=1),
        steps=[
            PlanStep(at=START, state=BLUE),
            PlanStep(at=START + timedelta(hours=2), state=OFF),
        ],
    )


# A store "opened again" as after a reboot: the file store reads the same file anew,
# the memory store is the same object (what a simulated device keeps across a restart).
Reopen = Callable[[], PlanStore]


@pytest.fixture(params=["file", "memory"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    if request.param == "file":
        path = tmp_path / "state" / "agent-dev-a.json"
        return lambda: FilePlanStore(path, "dev-a")
    memory = MemoryPlanStore()
    return lambda: memory


def test_contract_empty_store_holds_nothing(reopen: Reopen) -> None:
    assert reopen().load() is None


def test_contract_what_is_saved_is_loaded_after_a_reopen(reopen: Reopen) -> None:
    held = HeldPlan(version=7, plan=plan(6), applied=(6, START))
    reopen().save(held)
    assert reopen().load() == held


def test_contract_each_save_replaces_the_last(reopen: Reopen) -> None:
    store = reopen()
    store.save(HeldPlan(version=3, plan=plan(3)))
    store.save(HeldPlan(version=4, plan=plan(4), applied=(4, START)))
    store.save(HeldPlan(version=5))  # a version taken with no plan of its own (rejected)
    assert reopen().load() == HeldPlan(version=5)


def test_held_plan_is_consistent() -> None:
    with pytest.raises(ValueError, match="above the held version"):
        HeldPlan(version=2, plan=plan(3))
    with pytest.raises(ValueError, match="negative"):
        HeldPlan(version=-1)


# ---------------------------------------------------------------------- the file


def test_file_is_the_devices_own(tmp_path: Path) -> None:
    path = tmp_path / "new" / "agent-dev-a.json"
    FilePlanStore(path, "dev-a").save(HeldPlan(version=1, plan=plan(1)))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["agent-dev-a.json"]  # no temp left


class Crash(BaseException):
    """The process dies here (not an error anything catches)."""


def test_a_crash_between_the_write_and_the_rename_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "agent-dev-a.json"
    store = FilePlanStore(path, "dev-a")
    old = HeldPlan(version=4, plan=plan(4), applied=(4, START))
    store.save(old)

    def crash(src: Path, dst: Path) -> None:
        raise Crash

    with pytest.raises(Crash):
        write_atomically(path, b"{new, and cut short", replace=crash)
    assert (tmp_path / ".agent-dev-a.json.tmp").exists()  # the temp file was written
    assert FilePlanStore(path, "dev-a").load() == old  # the reboot reads the old file
    newer = HeldPlan(version=5, plan=plan(5))
    FilePlanStore(path, "dev-a").save(newer)  # and the next save goes through
    assert FilePlanStore(path, "dev-a").load() == newer


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x00\xff garbage", "Invalid JSON"),
        (b'{"format":1,"device":"dev-a","version":3,"plan":{"v":1', "EOF"),  # cut short
        (b'{"format":2,"device":"dev-a","version":3}', "format"),
        (b'{"format":1,"device":"dev-a","version":-3}', "version"),
        (b'{"format":1,"device":"dev-b","version":3}', "belongs to device 'dev-b'"),
        (
            b'{"format":1,"device":"dev-a","version":1,"plan":'
            + plan(2).model_dump_json().encode()
            + b"}",
            "above the held version",
        ),
        (b" " * 300_000, "over"),
    ],
)
def test_a_corrupt_file_is_logged_kept_aside_and_the_device_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "agent-dev-a.json"
    path.write_bytes(content)
    store = FilePlanStore(path, "dev-a")
    with caplog.at_level(logging.ERROR, logger="devices.planstore"):
        assert store.load() is None
    assert not path.exists()
    assert store.corrupt_path.read_bytes() == content
    [record] = caplog.records
    assert "unusable" in record.message and why in record.message
    assert str(store.corrupt_path) in record.message
    assert store.load() is None  # and the next boot finds nothing, quietly
    store.save(HeldPlan(version=1))
    assert store.load() == HeldPlan(version=1)


def test_an_unreadable_file_is_an_error_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agent-dev-a.json"
    path.mkdir()  # reading it fails whoever runs the test (root reads any file)
    with caplog.at_level(logging.ERROR, logger="devices.planstore"):
        assert FilePlanStore(path, "dev-a").load() is None
    assert "cannot read it" in caplog.text
    assert (tmp_path / "agent-dev-a.json.corrupt").is_dir()


def test_a_failed_save_is_logged_and_counted_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = FilePlanStore(blocker / "agent-dev-a.json", "dev-a")
    with caplog.at_level(logging.ERROR, logger="devices.planstore"):
        store.save(HeldPlan(version=9))
    assert store.save_failures == 1
    assert "cannot store plan 9" in caplog.text and "a reboot would lose it" in caplog.text


def test_a_leftover_temp_file_with_loose_bits_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "agent-dev-a.json"
    temp = tmp_path / ".agent-dev-a.json.tmp"
    temp.write_text("left by a crash")
    os.chmod(temp, 0o644)
    FilePlanStore(path, "dev-a").save(HeldPlan(version=2))
    assert path.stat().st_mode & 0o777 == 0o600


def test_default_state_file_follows_the_xdg_state_home(tmp_path: Path) -> None:
    assert default_state_file("dev-a", {"XDG_STATE_HOME": str(tmp_path)}) == (
        tmp_path / "illuminate" / "agent-dev-a.json"
    )
    fallback = Path.home() / ".local" / "state" / "illuminate" / "agent-dev-a.json"
    assert default_state_file("dev-a", {}) == fallback
    assert default_state_file("dev-a", {"XDG_STATE_HOME": "relative"}) == fallback
    with pytest.raises(ValueError, match="invalid device id"):
        default_state_file("../etc", {})
