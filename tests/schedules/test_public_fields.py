"""A campaign's public fields (cause, call to action) and a site's photo: validated, with
errors that name the file and the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedules.files import ScheduleFileError, load_campaign, load_sites

CAMPAIGN = """
id: blue-heart
title: {en: Blue Heart, fr: Cœur bleu}
cause: {en: Against trafficking in human beings, fr: Contre la traite des êtres humains}
color: "#009EDB"
call_to_action:
  text: {en: "Call the helpline", fr: "Appelez la ligne d'aide"}
  helplines:
    - {country: BE, number: "078/055.800", hours: {en: 24/7}}
  url: www.stophumantrafficking.be
windows:
  - targets: {all: true}
    dates: [2026-07-30]
    start: {sun: sunset}
    end: {at: "01:00"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def test_a_campaign_file_with_its_public_fields(tmp_path: Path) -> None:
    campaign = load_campaign(write(tmp_path, CAMPAIGN))
    assert campaign.cause == {
        "en": "Against trafficking in human beings",
        "fr": "Contre la traite des êtres humains",
    }
    call = campaign.call_to_action
    assert call is not None
    assert call.url == "https://www.stophumantrafficking.be"
    assert call.helplines[0].number == "078/055.800"
    assert call.helplines[0].hours == {"en": "24/7"}


def test_the_public_fields_are_optional(tmp_path: Path) -> None:
    text = "\n".join(
        line
        for line in CAMPAIGN.splitlines()
        if not line.startswith(
            ("cause", "call_to_action", "  text", "  helplines", "    -", "  url")
        )
    )
    campaign = load_campaign(write(tmp_path, text))
    assert campaign.cause is None and campaign.call_to_action is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "url: www.stophumantrafficking.be",
            "url: javascript:alert(1)",
            "call_to_action.url: url must be https://host/",
        ),
        (
            "url: www.stophumantrafficking.be",
            "url: http://example.org",
            "call_to_action.url: url must be https://host/",
        ),
        (
            "country: BE",
            "country: be",
            "call_to_action.helplines[0].country: country must be an ISO 3166 code",
        ),
        (
            'number: "078/055.800"',
            'number: "call us"',
            "call_to_action.helplines[0].number: number must be digits",
        ),
        ("cause: {en: Against", 'cause: {en: "", xx: Against', "cause.en"),
        ("  text: {en:", "  txt: {en:", "call_to_action.txt"),
    ],
)
def test_bad_public_fields_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in CAMPAIGN
    path = write(tmp_path, CAMPAIGN.replace(old, new, 1))
    with pytest.raises(ScheduleFileError) as caught:
        load_campaign(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


SITES = """
cities:
  - {id: brussels, name: {en: Brussels}, timezone: Europe/Brussels}
sites:
  - id: atomium
    city: brussels
    name: {en: Atomium}
    lat: 50.89493
    lon: 4.34153
    photo: {src: /static/photos/atomium.jpg, alt: {en: The Atomium at night, fr: L'Atomium la nuit}}
"""


def test_a_site_photo_needs_a_local_path_and_alt_text(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES)
    site = load_sites(path).sites[0]
    assert site.photo is not None and site.photo.src == "/static/photos/atomium.jpg"
    for bad, message in (
        ("src: /static/photos/atomium.jpg", "src: https://elsewhere.example/a.jpg"),
        ("src: /static/photos/atomium.jpg", "src: /static/../secret.jpg"),
        ("src: /static/photos/atomium.jpg", "src: /static/photos/atomium.svg"),
    ):
        path.write_text(SITES.replace(bad, message))
        with pytest.raises(
            ScheduleFileError, match=r"sites\[0\]\.photo\.src: photo must be a path"
        ):
            load_sites(path)
    path.write_text(SITES.replace(", alt: {en: The Atomium at night, fr: L'Atomium la nuit}", ""))
    with pytest.raises(ScheduleFileError, match=r"sites\[0\]\.photo\.alt: Field required"):
        load_sites(path)
