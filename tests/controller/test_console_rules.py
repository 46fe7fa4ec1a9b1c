"""The console's pure rules: YAML faults placed on their lines, a city's days with the
DST days marked, and the public state at an instant from the domain."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from controller.public import PublicState
from controller.web.console.timeline import city_conflicts, city_days, public_at
from controller.web.console.yaml_lines import Fault, check_yaml, faults_at, line_of, path_parts
from schedules.model import Campaign
from tests.controller.test_staff_api import CATALOG, campaign_body

GOOD = """\
id: blue-heart
title: {en: Blue Heart}
color: "#009EDB"
windows:
  - targets: {cities: [brussels]}
    dates: ["2026-07-30"]
    start: {at: "21:30"}
    end: {at: "23:59"}
"""


def faults(text: str) -> list[tuple[int, str]]:
    found = check_yaml(text)
    assert isinstance(found, list), found
    return [(f.line, f.path) for f in found]


def test_a_good_campaign_reads_as_the_campaign() -> None:
    found = check_yaml(GOOD)
    assert isinstance(found, Campaign) and found.id == "blue-heart"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('at: "21:30"', 'at: "25:00"'), [(7, "windows[0].start.at")]),  # a bad value
        (('color: "#009EDB"', 'colour: "#009EDB"'), [(3, "colour")]),  # an unknown key
        (("priority: 5", "priority: 5"), []),
    ],
)
def test_each_fault_is_on_the_line_it_is_about(change, expected) -> None:
    text = GOOD.replace("title:", "priority: 5\ntitle:").replace(*change)
    if not expected:
        assert isinstance(check_yaml(text), Campaign)
        return
    got = faults(text)
    assert got == [(line + 1, path) for line, path in expected]


def test_a_missing_field_is_placed_on_the_mapping_that_lacks_it() -> None:
    text = GOOD.replace('    end: {at: "23:59"}\n', "")
    assert faults(text) == [(5, "windows[0].end")]


def test_a_nested_value_is_placed_on_its_key() -> None:
    text = GOOD.replace('    end: {at: "23:59"}\n', "    end:\n      sun: nowhen\n")
    assert faults(text) == [(9, "windows[0].end.sun")]
    text = GOOD.replace('    end: {at: "23:59"}\n', "    end:\n      at: x\n      sun: sunset\n")
    assert faults(text)[0][0] in (8, 9)


def test_yaml_syntax_errors_name_the_line_the_parser_stopped_at() -> None:
    text = GOOD.replace('dates: ["2026-07-30"]', 'dates: ["2026-07-30"')
    ((line, path),) = faults(text)
    assert path == "(top)" and line in (6, 7)


def test_not_a_mapping_and_aliases_are_refused() -> None:
    assert faults("- a\n- b\n") == [(1, "(top)")]
    bomb = 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n'
    ((line, path),) = faults(bomb)
    assert path == "(top)" and line in (1, 2, 3)
    assert "aliases" in check_yaml(bomb)[0].message  # type: ignore[index]
    deep = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    assert faults(deep)[0][1] == "(top)"


def test_paths_and_lines_of_later_faults() -> None:
    assert path_parts("windows[12].start.at") == ["windows", 12, "start", "at"]
    assert path_parts("(top)") == []
    assert line_of(None, "windows") == 1
    assert faults_at(GOOD, "windows[0].targets", "unknown city") == [
        Fault("windows[0].targets", "unknown city", 5)
    ]


BRUSSELS = next(c for c in CATALOG.cities if c.id == "brussels")


def test_the_clock_change_days_are_marked_both_ways() -> None:
    autumn = city_days((), CATALOG, BRUSSELS, date(2026, 10, 24), 3)
    assert [d.dst for d in autumn] == [False, True, False]
    assert autumn[1].clocks == "the clocks change: CEST to CET"
    spring = city_days((), CATALOG, BRUSSELS, date(2026, 3, 28), 3)
    assert [d.dst for d in spring] == [False, True, False]
    assert spring[1].clocks == "the clocks change: CET to CEST"


def test_a_days_segments_are_in_local_time() -> None:
    campaign = Campaign.model_validate(campaign_body())
    (day,) = city_days((campaign,), CATALOG, BRUSSELS, date(2026, 7, 30), 1)
    (row,) = day.rows
    assert row.site == "atomium" and row.start.strftime("%H:%M %Z") == "21:30 CEST"
    assert row.on and row.color == "#009EDB"


def test_overlapping_windows_of_equal_priority_are_a_conflict_for_their_city() -> None:
    one = Campaign.model_validate(campaign_body())
    two = Campaign.model_validate(campaign_body(id="rival", color="#FF0000"))
    found = city_conflicts((one, two), CATALOG, BRUSSELS, date(2026, 7, 30), 1)
    assert [c.kind for c in found] == ["equal_priority_overlap"]
    assert found[0].site == "atomium"
    assert city_conflicts((one,), CATALOG, BRUSSELS, date(2026, 7, 30), 1) == []


def test_the_public_state_at_an_instant() -> None:
    campaign = Campaign.model_validate(campaign_body())
    grace, upcoming = timedelta(seconds=30), timedelta(hours=24)

    def state(at: datetime) -> PublicState:
        (site,) = public_at((campaign,), CATALOG, BRUSSELS, at, grace, upcoming)
        return site.state

    assert state(datetime(2026, 7, 30, 20, 0, tzinfo=UTC)) is PublicState.LIT  # 22:00 CEST
    assert state(datetime(2026, 7, 30, 12, 0, tzinfo=UTC)) is PublicState.SCHEDULED
    assert state(datetime(2026, 7, 31, 12, 0, tzinfo=UTC)) is PublicState.OFF
    assert state(datetime(2026, 7, 28, 12, 0, tzinfo=UTC)) is PublicState.OFF  # > 24 h ahead
    storm = Campaign.model_validate(
        {
            "id": "storm",
            "title": {"en": "Storm"},
            "on": False,
            "override": True,
            "reason": "Storm",
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": ["2026-07-30"],
                    "start": {"at": "21:00"},
                    "end": {"at": "23:00"},
                }
            ],
        }
    )
    (site,) = public_at(
        (campaign, storm),
        CATALOG,
        BRUSSELS,
        datetime(2026, 7, 30, 20, 0, tzinfo=UTC),
        grace,
        upcoming,
    )
    # the override wins from 21:00 to 23:00; the campaign's window goes on after it
    assert site.state is PublicState.SCHEDULED
    assert site.start is not None and site.start.strftime("%H:%M") == "23:00"
