"""A campaign's optional `rollout:` section: what it accepts, what it refuses, and which
sites are live at an instant."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.campaigns import check_rollout
from schedules.files import ScheduleFileError, Yaml12Loader, parse_document
from schedules.model import Campaign, SiteCatalog
from schedules.rollout import (
    PauseRule,
    RolloutConfig,
    format_duration,
    live_sites,
    touched_sites,
)

CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {"id": "atomium", "city": "brussels", "name": {"en": "A"}, "lat": 50.9, "lon": 4.3},
            {"id": "menin-gate", "city": "ypres", "name": {"en": "M"}, "lat": 50.8, "lon": 2.9},
        ],
    }
)
ROLLOUT = {
    "canary_sites": ["atomium"],
    "maximum_per_minute": 10,
    "wave_interval": "5m",
    "pause": {"threshold_percentage": 20, "min_results": 5},
}


def body(rollout: Any = ROLLOUT, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "blue-heart",
        "title": {"en": "Blue Heart"},
        "color": "#009edb",
        "windows": [
            {
                "targets": {"cities": ["brussels"]},
                "dates": ["2026-07-30"],
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
        "rollout": rollout,
    }
    out.update(changes)
    return out


def test_a_rollout_section_reads_and_writes_back_the_same() -> None:
    campaign = parse_document(Campaign, body(), "c.yaml")
    assert campaign.rollout is not None
    assert campaign.rollout.wave_interval == timedelta(minutes=5)
    assert campaign.rollout.city_order == ()
    assert Campaign.model_validate(campaign.model_dump(mode="json")) == campaign
    assert parse_document(Campaign, body(rollout=None), "c.yaml").rollout is None


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({**ROLLOUT, "maximum_per_minute": 0}, "rollout.maximum_per_minute: Input should be"),
        ({**ROLLOUT, "maximum_per_minute": "10"}, "rollout.maximum_per_minute: Input should be"),
        ({**ROLLOUT, "wave_interval": "-5m"}, "rollout.wave_interval: a duration looks like"),
        ({**ROLLOUT, "wave_interval": "13h"}, "rollout.wave_interval: wave_interval must be"),
        (
            {**ROLLOUT, "canary_sites": ["Atomium"]},
            r"rollout.canary_sites\[0\]: 'Atomium' is not a valid id",
        ),
        ({**ROLLOUT, "pause": {"threshold_percentage": 100, "min_results": 5}}, "less than 100"),
        ({**ROLLOUT, "pause": {"threshold_percentage": "20", "min_results": 5}}, "valid number"),
        ({**ROLLOUT, "pause": {"threshold_percentage": 20, "min_results": 0}}, "min_results"),
        ({**ROLLOUT, "pause": {"threshold_percentage": 20}}, "pause.min_results: Field required"),
        ({**ROLLOUT, "speed": 3}, "rollout.speed: Extra inputs are not permitted"),
        ({k: v for k, v in ROLLOUT.items() if k != "pause"}, "rollout.pause: Field required"),
    ],
)
def test_a_bad_rollout_section_is_refused_with_its_path(rollout: Any, message: str) -> None:
    with pytest.raises(ScheduleFileError, match=message):
        parse_document(Campaign, body(rollout=rollout), "c.yaml")


def test_an_override_cannot_be_rolled_out() -> None:
    with pytest.raises(ScheduleFileError, match="an override goes out at once"):
        parse_document(Campaign, body(override=True, reason="storm"), "c.yaml")


@pytest.mark.parametrize(
    ("text", "seconds", "written"),
    [("90s", 90, "1m30s"), ("5m", 300, "5m"), ("1h30m", 5400, "1h30m"), (0, 0, "0s")],
)
def test_durations(text: object, seconds: int, written: str) -> None:
    rollout = parse_document(Campaign, body(rollout={**ROLLOUT, "wave_interval": text}), "c")
    assert rollout.rollout is not None
    assert rollout.rollout.wave_interval == timedelta(seconds=seconds)
    assert format_duration(timedelta(seconds=seconds)) == written


def test_live_sites_are_those_with_a_window_open_now() -> None:
    campaign = Campaign.model_validate(body())
    start = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)  # 21:00 in Brussels
    assert live_sites(campaign, CATALOG, start - timedelta(seconds=1)) == ()
    assert live_sites(campaign, CATALOG, start) == ("atomium",)
    assert live_sites(campaign, CATALOG, start + timedelta(hours=2)) == ()


def test_touched_sites_are_the_targets_before_and_after() -> None:
    before = Campaign.model_validate(body())
    after = Campaign.model_validate(
        body(windows=[{**body()["windows"][0], "targets": {"sites": ["menin-gate"]}}])
    )
    assert touched_sites([before], CATALOG) == ("atomium",)
    assert touched_sites([before, after], CATALOG) == ("atomium", "menin-gate")
    assert touched_sites([None, after], CATALOG) == ("menin-gate",)


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_example_of_docs_rollouts_loads_and_its_table_names_every_key() -> None:
    text = (DOCS / "rollouts.md").read_text()
    (example,) = re.findall(r"^```yaml campaign\n(.*?)^```$", text, re.S | re.M)
    sites = re.findall(
        r"^```yaml sites\n(.*?)^```$", (DOCS / "schedules.md").read_text(), re.S | re.M
    )
    catalog = parse_document(SiteCatalog, yaml.load(sites[0], Loader=Yaml12Loader), "sites")
    campaign = parse_document(Campaign, yaml.load(example, Loader=Yaml12Loader), "rollouts.md")
    assert campaign.rollout is not None
    check_rollout(campaign, catalog)
    for key in RolloutConfig.model_fields:
        if key != "pause":
            assert f"| `{key}` |" in text, key
    for key in PauseRule.model_fields:
        assert f"| `pause.{key}` |" in text, key
