"""The examples in docs/schedules.md are real: each file loads, each command prints
exactly what the page shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from controller.cli import main
from schedules.conflicts import check_campaign
from schedules.files import load_campaign, load_sites

DOC = Path(__file__).resolve().parents[2] / "docs" / "schedules.md"
BLOCK = re.compile(r"^```(\w+)(?: (\w+))?\n(.*?)^```$", re.S | re.M)


def blocks(kind: str, tag: str | None = None) -> list[str]:
    return [
        body
        for lang, label, body in BLOCK.findall(DOC.read_text())
        if lang == kind and label == (tag or "")
    ]


@pytest.fixture
def doc_files(tmp_path: Path) -> Path:
    (sites,) = blocks("yaml", "sites")
    (tmp_path / "sites.yaml").write_text(sites)
    for body in blocks("yaml", "campaign"):
        cid = yaml.safe_load(body)["id"]
        (tmp_path / f"{cid}.yaml").write_text(body)
    return tmp_path


def test_every_example_file_loads_and_passes_the_checks(doc_files: Path):
    from datetime import UTC, datetime

    catalog = load_sites(doc_files / "sites.yaml")
    campaigns = [
        load_campaign(p) for p in sorted(doc_files.glob("*.yaml")) if p.name != "sites.yaml"
    ]
    assert len(campaigns) == len(blocks("yaml", "campaign")) == 3
    for campaign in campaigns:
        check_campaign(
            campaign, catalog, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
        )


def test_every_console_example_prints_what_the_page_says(
    doc_files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(doc_files)
    examples = blocks("console")
    assert examples
    for body in examples:
        lines = body.splitlines()
        assert lines[0].startswith("$ illuminate ")
        expected = "\n".join(lines[1:]).rstrip() + "\n"
        assert main(shlex.split(lines[0][len("$ illuminate ") :])) == 0
        assert capsys.readouterr().out.rstrip() + "\n" == expected
