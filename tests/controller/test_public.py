"""The public state of a site (DESIGN.md, "Public state of a site"), from hand-made snapshots.

The window is 21:00-23:00 in Brussels on 10 June 2025 (CEST, UTC+2): 19:00Z-21:00Z.
Unless a test says otherwise, every device's newest command is plan version 1, issued the
day before: off, then blue at 19:00Z, then off at 21:00Z.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.lifecycle import CommandState
from controller.public import (
    Fragments,
    PublicSite,
    PublicState,
    PublicStatus,
    Renderer,
    SiteMemo,
    assess,
    public_status,
    runs_range,
    site_runs,
)
from controller.store.base import Command, DeviceView, Snapshot
from devices.protocol import LightState, Plan, PlanStep, encode
from schedules.model import Campaign, SiteCatalog

S = datetime(2025, 6, 10, 19, 0, tzinfo=UTC)
E = datetime(2025, 6, 10, 21, 0, tzinfo=UTC)
PREV_S = S - timedelta(days=1)
GRACE = timedelta(seconds=30)
UPCOMING = timedelta(hours=24)
BLUE = {"on": True, "color": "#009EDB", "level": 80}

SITE_IDS = ["atomium", "grand-place", "manneken-pis", "cathedral", "palace", "bourse"]
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {
                "id": "brussels",
                "name": {"en": "Brussels", "fr": "Bruxelles"},
                "timezone": "Europe/Brussels",
            }
        ],
        "sites": [
            {
                "id": sid,
                "city": "brussels",
                "name": {"en": sid.title(), "fr": f"{sid} (fr)"},
                "lat": 50.8 + i / 100,
                "lon": 4.35,
            }
            for i, sid in enumerate(SITE_IDS)
        ],
    }
)


def campaign(
    cid: str = "blue-heart",
    targets: dict[str, Any] | None = None,
    dates: tuple[str, ...] = ("2025-06-10",),
    start: str = "21:00",
    end: str = "23:00",
) -> Campaign:
    return Campaign.model_validate(
        {
            "id": cid,
            "title": {"en": "Blue Heart"},
            "color": "#009edb",
            "level": 80,
            "windows": [
                {
                    "targets": targets or {"sites": ["atomium"]},
                    "dates": list(dates),
                    "start": {"at": start},
                    "end": {"at": end},
                }
            ],
        }
    )


def device(
    did: str = "dev-atomium",
    site: str = "atomium",
    online: bool | None = True,
    step_at: datetime | None = None,
    state: dict[str, Any] | None = None,
    applied_at: datetime | None = None,
    version: int = 1,
) -> DeviceView:
    return DeviceView(
        id=did,
        site_id=site,
        online=online,
        applied_version=version if step_at else None,
        applied_step_at=step_at,
        applied_state=state,
        applied_at=applied_at,
    )


def lit_device(
    did: str = "dev-atomium", site: str = "atomium", at: datetime = S, version: int = 1
) -> DeviceView:
    return device(did, site, step_at=S, state=BLUE, applied_at=at, version=version)


ISSUED = S - timedelta(days=1)
OFF = LightState(on=False)
BLUE_STEP = LightState.model_validate(BLUE)


def command(
    did: str = "dev-atomium",
    version: int = 1,
    steps: list[tuple[datetime, LightState]] | None = None,
) -> Command:
    """A plan version for a device; by default off, blue 19:00Z-21:00Z, then off."""
    if steps is None:
        steps = [(ISSUED, OFF), (S, BLUE_STEP), (E, OFF)]
    plan = Plan(
        version=version,
        issued_at=ISSUED,
        steps=[PlanStep(at=at, state=state) for at, state in steps],
    )
    return Command(
        id=version,
        device_id=did,
        version=version,
        payload=encode(plan).decode(),
        state=CommandState.PUBLISHED,
        state_at=ISSUED,
        created_at=ISSUED,
    )


def snap(
    *devices: DeviceView,
    campaigns: tuple[Campaign, ...] | None = None,
    commands: dict[str, Command] | None = None,
) -> Snapshot:
    """`commands` replaces the default command of the devices it names."""
    latest = {d.id: command(d.id) for d in devices}
    latest.update(commands or {})
    return Snapshot(CATALOG, campaigns if campaigns is not None else (campaign(),), devices, latest)


def status(snapshot: Snapshot, now: datetime, lang: str = "en") -> PublicStatus:
    return public_status(snapshot, now, GRACE, UPCOMING, lang)


def atomium(snapshot: Snapshot, now: datetime) -> PublicSite:
    site = status(snapshot, now).sites[0]
    assert site.id == "atomium"
    return site


def test_off_when_no_window_is_upcoming() -> None:
    site = atomium(snap(device()), datetime(2025, 6, 9, 12, 0, tzinfo=UTC))  # 31 h ahead
    assert site.state is PublicState.OFF
    assert (site.window, site.color, site.confirmed_at) == (None, None, None)


def test_off_after_the_window_even_with_a_lit_report() -> None:
    site = atomium(snap(lit_device()), E + timedelta(minutes=1))
    assert site.state is PublicState.OFF
    assert site.window is None


def test_scheduled_when_a_window_starts_within_upcoming() -> None:
    site = atomium(snap(device()), datetime(2025, 6, 10, 12, 0, tzinfo=UTC))
    assert site.state is PublicState.SCHEDULED
    assert site.window is not None
    assert (site.window.start, site.window.end) == (S, E)
    assert site.color is None


def test_a_scheduled_window_shows_its_true_end_past_the_upcoming_limit() -> None:
    now = datetime(2025, 6, 9, 20, 0, tzinfo=UTC)  # now + 24 h = 10 June 20:00Z, mid-window
    site = atomium(snap(device()), now)
    assert site.state is PublicState.SCHEDULED
    assert site.window is not None
    assert (site.window.start, site.window.end) == (S, E)


def test_pending_when_open_without_report_before_grace() -> None:
    site = atomium(snap(device()), S + timedelta(seconds=29))
    assert site.state is PublicState.PENDING
    assert site.window is not None
    assert (site.window.start, site.window.end) == (S, E)
    assert (site.color, site.confirmed_at) == (None, None)


def test_lit_when_the_device_applied_the_opening_step() -> None:
    applied_at = S + timedelta(seconds=2)
    # the colour may come back in lower case: it is the same output
    dev = device(
        step_at=S, state={"on": True, "color": "#009edb", "level": 80}, applied_at=applied_at
    )
    site = atomium(snap(dev), S + timedelta(minutes=10))
    assert site.state is PublicState.LIT
    assert site.color == "#009EDB"
    assert site.confirmed_at == applied_at
    assert site.window is not None
    assert (site.window.start, site.window.end) == (S, E)


def test_unconfirmed_after_grace_without_report() -> None:
    assert atomium(snap(device()), S + GRACE).state is PublicState.UNCONFIRMED


@pytest.mark.parametrize("online", [False, None], ids=["offline", "never-seen"])
def test_offline_device_in_an_open_window(online: bool | None) -> None:
    site = atomium(snap(device(online=online)), S + timedelta(seconds=5))
    assert site.state is PublicState.OFFLINE
    assert (site.color, site.confirmed_at) == (None, None)


def test_an_offline_device_is_not_lit_even_with_a_matching_report() -> None:
    dev = device(online=False, step_at=S, state=BLUE, applied_at=S)
    assert atomium(snap(dev), S + timedelta(minutes=1)).state is PublicState.OFFLINE


def test_lit_requires_all_devices_of_the_site() -> None:
    one = snap(lit_device("dev-a"), device("dev-b"))
    assert atomium(one, S + timedelta(seconds=10)).state is PublicState.PENDING
    assert atomium(one, S + GRACE).state is PublicState.UNCONFIRMED

    offline = snap(lit_device("dev-a"), device("dev-b", online=False))
    assert atomium(offline, S + timedelta(seconds=10)).state is PublicState.OFFLINE

    second = S + timedelta(seconds=7)
    both = snap(lit_device("dev-a", at=S + timedelta(seconds=3)), lit_device("dev-b", at=second))
    site = atomium(both, S + timedelta(minutes=5))
    assert site.state is PublicState.LIT
    assert site.confirmed_at == second  # the last device to confirm


def test_devices_of_other_sites_do_not_count() -> None:
    s = snap(lit_device("dev-a"), device("dev-other", site="grand-place", online=False))
    assert atomium(s, S + timedelta(minutes=1)).state is PublicState.LIT


def test_a_site_with_no_device_is_never_lit() -> None:
    s = snap(lit_device("dev-other", site="grand-place"))
    assert atomium(s, S + timedelta(seconds=5)).state is PublicState.PENDING
    assert atomium(s, S + GRACE).state is PublicState.UNCONFIRMED


def test_a_report_for_the_previous_window_is_not_lit() -> None:
    two_days = (campaign(dates=("2025-06-09", "2025-06-10")),)
    dev = device(step_at=PREV_S, state=BLUE, applied_at=PREV_S)
    assert atomium(snap(dev, campaigns=two_days), S + timedelta(seconds=10)).state is (
        PublicState.PENDING
    )
    assert atomium(snap(dev, campaigns=two_days), S + GRACE).state is PublicState.UNCONFIRMED


@pytest.mark.parametrize(
    "applied",
    [
        {"on": True, "color": "#C8102E", "level": 80},
        {"on": True, "color": "#009EDB", "level": 40},
        {"on": False},
    ],
    ids=["wrong-colour", "wrong-level", "off"],
)
def test_a_wrong_output_is_not_lit(applied: dict[str, Any]) -> None:
    dev = device(step_at=S, state=applied, applied_at=S)
    site = atomium(snap(dev), S + timedelta(seconds=10))
    assert site.state is PublicState.PENDING
    assert site.color is None


def mixed() -> Snapshot:
    """One site in each state at NOW (19:30:10Z)."""
    campaigns = (
        campaign("main", {"sites": ["atomium", "grand-place", "manneken-pis"]}),
        campaign("late", {"sites": ["cathedral"]}, start="21:30"),
        campaign("night", {"sites": ["palace"]}, start="23:30", end="23:45"),
    )
    devices = (
        lit_device("dev-1", "atomium"),
        device("dev-2", "grand-place"),
        device("dev-3", "manneken-pis", online=False),
        device("dev-4", "cathedral"),
        device("dev-5", "palace"),
        device("dev-6", "bourse"),
    )
    return snap(*devices, campaigns=campaigns)


NOW = datetime(2025, 6, 10, 19, 30, 10, tzinfo=UTC)


def test_summary_counts_one_site_per_state() -> None:
    out = status(mixed(), NOW)
    assert [(s.id, s.state.value) for s in out.sites] == [
        ("atomium", "lit"),
        ("grand-place", "unconfirmed"),
        ("manneken-pis", "offline"),
        ("cathedral", "pending"),
        ("palace", "scheduled"),
        ("bourse", "off"),
    ]
    assert out.summary.model_dump() == {
        "total": 6,
        "lit": 1,
        "pending": 1,
        "unconfirmed": 1,
        "offline": 1,
        "scheduled": 1,
        "off": 1,
    }
    assert out.generated_at == NOW


def test_names_follow_the_language() -> None:
    site = status(mixed(), NOW, lang="fr").sites[0]
    assert (site.name, site.city) == ("atomium (fr)", "Bruxelles")
    site = status(mixed(), NOW, lang="nl").sites[0]
    assert (site.name, site.city) == ("Atomium", "Brussels")


def test_json_carries_only_allow_listed_fields_and_no_device_id() -> None:
    out = status(mixed(), NOW).model_dump(mode="json")
    text = json.dumps(out)
    for did in ("dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6"):
        assert did not in text
    assert set(out) == {"generated_at", "summary", "sites"}
    allowed = {
        "id",
        "name",
        "city",
        "lat",
        "lon",
        "state",
        "color",
        "confirmed_at",
        "confirmed_by",
        "window",
    }
    for site in out["sites"]:
        assert set(site) <= allowed
        if site["state"] != "lit":
            assert site["confirmed_by"] is None
    lit = out["sites"][0]
    assert lit["confirmed_at"] == "2025-06-10T19:00:00Z"
    assert lit["confirmed_by"] == "echo"  # a native agent without a sensor
    assert lit["window"] == {"start": "2025-06-10T19:00:00Z", "end": "2025-06-10T21:00:00Z"}
    assert lit["color"] == "#009EDB"
    assert out["generated_at"] == "2025-06-10T19:30:10Z"


def test_etag_is_stable_when_only_generated_at_changes() -> None:
    a = status(mixed(), NOW)
    b = status(mixed(), NOW + timedelta(seconds=5))
    assert a.generated_at != b.generated_at
    assert a.etag() == b.etag()
    assert re.fullmatch(r'"[0-9a-f]{32}"', a.etag())


def test_etag_changes_when_a_state_changes() -> None:
    pending = status(snap(device()), S + timedelta(seconds=10))
    lit = status(snap(lit_device()), S + timedelta(seconds=10))
    unconfirmed = status(snap(device()), S + GRACE)
    assert pending.sites[0].state is PublicState.PENDING
    assert lit.sites[0].state is PublicState.LIT
    assert unconfirmed.sites[0].state is PublicState.UNCONFIRMED
    assert len({pending.etag(), lit.etag(), unconfirmed.etag()}) == 3


def test_etag_is_stable_while_a_scheduled_window_straddles_the_upcoming_limit() -> None:
    tomorrow = (campaign(dates=("2025-06-11",)),)
    now = S + timedelta(minutes=30)  # tomorrow's window is 23.5 h to 25.5 h ahead
    a = status(snap(device(), campaigns=tomorrow), now)
    b = status(snap(device(), campaigns=tomorrow), now + timedelta(seconds=1))
    assert a.sites[0].state is PublicState.SCHEDULED
    assert a.etag() == b.etag()


def test_a_later_state_report_of_other_output_takes_lit_away() -> None:
    dark = {"on": False, "color": "#000000", "level": 0}
    lit = lit_device(at=S + timedelta(seconds=1))
    reported_dark = DeviceView(
        **{**lit.__dict__, "reported_state": dark, "reported_at": S + timedelta(minutes=5)}
    )
    now = S + timedelta(minutes=6)
    assert atomium(snap(lit), now).state is PublicState.LIT
    site = atomium(snap(reported_dark), now)
    assert site.state is PublicState.UNCONFIRMED
    assert site.color is None
    # a report from before the apply says nothing about it
    earlier = DeviceView(**{**lit.__dict__, "reported_state": dark, "reported_at": S})
    assert atomium(snap(earlier), now).state is PublicState.LIT


def test_adjacent_windows_of_the_same_look_are_one_confirmed_run() -> None:
    # two campaigns back to back with the same colour: the device's plan has one step at
    # 21:00 (19:00Z), and its confirmation covers the whole run
    first = campaign("first", start="21:00", end="22:00")
    second = campaign("second", start="22:00", end="23:00")
    now = S + timedelta(minutes=90)  # inside the second campaign's window
    site = atomium(snap(lit_device(), campaigns=(first, second)), now)
    assert site.state is PublicState.LIT
    assert site.window is not None
    assert (site.window.start, site.window.end) == (S, E)


# ---- the newest plan and its version ------------------------------------------------


def test_an_apply_report_of_an_older_version_does_not_make_a_site_lit() -> None:
    # the device applied the blue step of version 1, but version 2 is its newest plan
    newer = {"dev-atomium": command(version=2)}
    s = snap(lit_device(version=1), commands=newer)
    assert atomium(s, S + timedelta(seconds=10)).state is PublicState.PENDING
    site = atomium(s, S + GRACE)
    assert site.state is PublicState.UNCONFIRMED
    assert (site.color, site.confirmed_at) == (None, None)
    # once it confirms version 2, it is lit
    assert atomium(snap(lit_device(version=2), commands=newer), S + GRACE).state is (
        PublicState.LIT
    )


def test_a_device_without_a_plan_is_not_lit() -> None:
    s = Snapshot(CATALOG, (campaign(),), (lit_device(),), {})
    assert atomium(s, S + timedelta(seconds=10)).state is PublicState.PENDING
    assert atomium(s, S + GRACE).state is PublicState.UNCONFIRMED


def test_a_plan_whose_step_in_force_is_not_the_window_is_not_lit() -> None:
    # the plan in force predates the campaign: its step now is off
    dark = {"dev-atomium": command(steps=[(ISSUED, OFF)])}
    dev = device(step_at=ISSUED, state={"on": False}, applied_at=ISSUED)
    assert atomium(snap(dev, commands=dark), S + GRACE).state is PublicState.UNCONFIRMED
    # a plan lit from a later instant than the window's start is not the window's step
    late = {"dev-atomium": command(steps=[(ISSUED, OFF), (S + timedelta(minutes=5), BLUE_STEP)])}
    dev = device(step_at=S + timedelta(minutes=5), state=BLUE, applied_at=S + timedelta(minutes=5))
    assert atomium(snap(dev, commands=late), S + timedelta(minutes=6)).state is (
        PublicState.UNCONFIRMED
    )


def test_a_confirmed_plan_of_another_colour_is_not_lit() -> None:
    # the campaign turned red after the device confirmed its blue plan
    red = Campaign.model_validate({**campaign().model_dump(mode="json"), "color": "#C8102E"})
    site = atomium(snap(lit_device(), campaigns=(red,)), S + GRACE)
    assert site.state is PublicState.UNCONFIRMED
    assert site.color is None


def test_a_plan_that_does_not_decode_is_not_lit() -> None:
    broken = Command(
        id=9,
        device_id="dev-atomium",
        version=1,
        payload="{not json",
        state=CommandState.PUBLISHED,
        state_at=ISSUED,
        created_at=ISSUED,
    )
    s = snap(lit_device(), commands={"dev-atomium": broken})
    assert atomium(s, S + GRACE).state is PublicState.UNCONFIRMED


# the site memo: the same states as a fresh assessment, for less ----------------------


def _assessed(s: Snapshot, now: datetime, memo: SiteMemo | None, runs: dict) -> list:
    def runs_of(site, city):
        # one expansion per site, kept like the view's cache keeps it (same object)
        if site.id not in runs:
            runs[site.id] = site_runs(s.campaigns, site, city, S - timedelta(days=2), E + UPCOMING)
        return runs[site.id]

    if memo is not None:
        memo.begin()
    out = assess(s, now, GRACE, UPCOMING, runs_of, memo=memo)
    if memo is not None:
        memo.end()
    return [(site.id, state) for site, _, state in out.sites]


def test_the_site_memo_gives_the_states_a_fresh_assessment_gives() -> None:
    memo = SiteMemo()
    runs: dict = {}
    before = snap(device())
    after = snap(lit_device())
    timeline = [
        (before, S - timedelta(hours=2)),
        (before, S - timedelta(hours=1)),  # nothing moved: kept
        (before, S),  # the window opens
        (before, S + timedelta(seconds=10)),
        (after, S + timedelta(seconds=12)),  # the device confirmed
        (after, S + GRACE),
        (before, S + GRACE + timedelta(seconds=1)),  # a contradicting report came
        (before, E),  # the window ends
        (before, E + timedelta(minutes=1)),
    ]
    for s, now in timeline:
        assert _assessed(s, now, memo, runs) == _assessed(s, now, None, runs), now
    assert memo.hits > 0


def test_the_site_memo_hands_back_the_same_state_when_nothing_moved() -> None:
    memo = SiteMemo()
    runs: dict = {}
    s = snap(lit_device())
    first = dict(_assessed(s, S + timedelta(minutes=1), memo, runs))
    again = dict(_assessed(s, S + timedelta(minutes=2), memo, runs))
    assert again["atomium"] is first["atomium"]
    assert again["atomium"].state is PublicState.LIT


def test_kept_fragments_hold_only_their_own_bytes() -> None:
    """Site fragments live as long as the site's state: each must own a buffer of its
    size, not the encoder's working buffer (4 KiB for 200 bytes of JSON, 150 MiB at
    10,000 sites in four languages)."""
    snapshot = snap(*(lit_device(f"dev-{s}", s) for s in SITE_IDS))
    start, end = runs_range(S, UPCOMING)
    assessment = assess(
        snapshot,
        S + GRACE,
        GRACE,
        UPCOMING,
        lambda site, city: site_runs(snapshot.campaigns, site, city, start, end),
    )
    fragments = Fragments()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for lang in ("en", "fr", "nl", "de"):
            Renderer(assessment, fragments).sites(lang)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    languages = ("en", "fr", "nl", "de")
    encoded = sum(len(Renderer(assessment, Fragments()).sites(lang)) for lang in languages)
    assert held < 2 * encoded + 8192, (held, encoded)
