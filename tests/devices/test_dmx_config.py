"""The agent's light output settings: the file, the flags, and what they make."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from devices.colour import Correction
from devices.commands import PASSWORD_ENV, build_parser
from devices.dmx import Head, Layout
from devices.dmx_artnet import ArtNetOutput
from devices.dmx_config import LightOutputSettings, load
from devices.dmx_fixture import DmxFixture
from devices.dmx_output import MemoryDmxOutput
from devices.dmx_sacn import SacnOutput
from devices.fixture import SimulatedFixture
from devices.light_output import from_args, open_output
from devices.protocol import LightState

FILE = """\
output: sacn
target: 10.20.0.31
sync_universe: 9
fixtures:
  - {name: north, universe: 1, address: 1, layout: drgb, gains: [1.0, 0.62, 1.0]}
  - name: south
    universe: 2
    address: 17
    layout: rgbw
    matrix: [[1, 0, 0], [0, 0.62, 0.05], [0, 0, 1]]
"""


def settings(*flags: str) -> LightOutputSettings:
    if "--id" not in flags:
        flags = ("--id", "dev-a", *flags)
    args = build_parser().parse_args(["agent", *flags])
    return from_args(args)


def test_a_file_gives_the_output_and_every_head(tmp_path: Path) -> None:
    path = tmp_path / "fixtures.yaml"
    path.write_text(FILE)
    loaded = load(path)
    assert loaded.output == "sacn" and loaded.sync_universe == 9
    assert loaded.heads() == [
        Head(1, 1, Layout.DRGB, Correction.from_gains(1.0, 0.62, 1.0), "north"),
        Head(2, 17, Layout.RGBW, Correction(((1, 0, 0), (0, 0.62, 0.05), (0, 0, 1))), "south"),
    ]
    # the same as JSON, through the agent's flag
    as_json = tmp_path / "fixtures.json"
    as_json.write_text(json.dumps(loaded.model_dump(mode="json")))
    assert settings("--fixture-config", str(as_json)) == loaded
    light = open_output(loaded, "dev-a")
    assert isinstance(light.fixture, DmxFixture)
    output = light.fixture.output
    assert isinstance(output, SacnOutput)
    assert (output.destination, output.port, output.sync_universe) == ("10.20.0.31", 5568, 9)
    assert output.source_name == "Illuminate dev-a"
    assert "sync universe 9" in light.describe()
    assert "north u1/1 drgb calibrated" in light.describe()


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fixtures.yaml"
    path.write_text(FILE)
    got = settings("--fixture-config", str(path), "--dmx-target", "10.9.9.9", "--priority", "150")
    assert (got.target, got.priority, got.sync_universe) == ("10.9.9.9", 150, 9)


def test_flags_alone_describe_one_fixture() -> None:
    assert settings().output == "sim" and not settings().fixtures
    assert isinstance(open_output(settings(), "dev-a").fixture, SimulatedFixture)
    sacn = settings("--output", "sacn")
    assert sacn.heads() == [Head(1, 1, Layout.RGB)]
    got = settings(
        "--output", "artnet", "--dmx-target", "10.0.0.5", "--universe", "3",
        "--address", "100", "--layout", "rgbwa", "--matrix", "1,0,0,0,0.5,0,0,0,1", "--artsync",
    )  # fmt: skip
    assert got.heads() == [
        Head(3, 100, Layout.RGBWA, Correction(((1, 0, 0), (0, 0.5, 0), (0, 0, 1))))
    ]
    light = open_output(got, "dev-a")
    assert isinstance(light.fixture, DmxFixture)
    assert isinstance(light.fixture.output, ArtNetOutput) and light.fixture.output.sync
    assert settings("--output", "artnet", "--dmx-target", "h").heads()[0].universe == 0


def test_sim_with_fixtures_keeps_the_dmx_values_in_memory() -> None:
    light = open_output(settings("--output", "sim", "--universe", "4", "--gains", "1,0.5,1"), "x")
    assert isinstance(light.fixture, DmxFixture)
    output = light.fixture.output
    assert isinstance(output, MemoryDmxOutput)
    light.fixture.apply(LightState(on=True, color="#00FFFF", level=100))
    assert output.frames[4][:3] == bytes([0, 128, 255])
    light.close()
    assert not output.running


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--output", "sacn", "--universe", "0"], "sACN universes run 1-63999, not 0"),
        (["--output", "sacn", "--universe", "64000"], "sACN universes run 1-63999"),
        (
            ["--output", "artnet", "--dmx-target", "h", "--universe", "32768"],
            "Art-Net universes run 0-32767, not 32768",
        ),
        (["--output", "artnet"], "Art-Net needs the node's address"),
        (["--output", "sacn", "--address", "0"], "DMX address 0 is outside 1-512"),
        (["--output", "sacn", "--address", "513"], "outside 1-512"),
        (
            ["--output", "sacn", "--address", "510", "--layout", "rgbw"],
            "needs slots 510-513; a universe has 512 (the highest address for rgbw is 509)",
        ),
        (["--output", "sacn", "--gains", "1,5,1"], "gain 5.0 is outside 0 to 4"),
        (["--output", "sacn", "--matrix", "1,0,0,0,9,0,0,0,1"], "coefficient 9.0"),
        (["--output", "sacn", "--priority", "201"], "priority runs 0-200"),
        (["--output", "sacn", "--sync-universe", "1"], "also carries a fixture"),
        (["--output", "artnet", "--dmx-target", "h", "--priority", "5"], "for sACN only"),
        (["--output", "sacn", "--artsync"], "for Art-Net only"),
        (["--output", "sacn", "--dmx-port", "0"], "--dmx-port"),
        (["--universe", "3"], "give --output sacn or artnet too"),
        (["--output", "sacn", "--dmx-target", "node 3"], "'node 3' is not an IP address"),
    ],
)
def test_bad_flags_say_what_is_wrong(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        settings(*flags)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("output: dmx\n", "output"),
        ("output: sacn\n", "sACN needs at least one fixture"),
        ("output: sacn\nfixtures: [{universe: 1, adress: 4}]\n", "fixtures.0.adress"),
        ("output: sacn\nfixtures: [{universe: 1, layout: rgbx}]\n", "fixtures.0.layout"),
        (
            "output: sacn\nfixtures: [{name: a, universe: 1, gains: [1, 1, 1], "
            "matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]\n",
            "fixture a (universe 1 address 1): give gains or a matrix, not both",
        ),
        (
            "output: sacn\nfixtures:\n  - {name: a, universe: 1, address: 1, layout: rgbw}\n"
            "  - {name: b, universe: 1, address: 4}\n",
            "share slot 4 of universe 1",
        ),
        ("output: [sacn\n", "not valid JSON/YAML"),
        ("42\n", "expected a mapping"),
    ],
)
def test_a_bad_file_names_the_file_and_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fixtures.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        load(path)
    assert str(exc.value).startswith(f"fixture file {path}")
    assert message in str(exc.value)


def test_the_agent_command_reports_bad_light_output_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    args = build_parser().parse_args(
        ["agent", "--id", "dev-a", "--password", "p", "--output", "sacn", "--universe", "0"]
    )
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("illuminate agent: error: ") and "1-63999" in err
    assert "Traceback" not in err
    args = build_parser().parse_args(
        ["agent", "--id", "dev-a", "--password", "p", "--fixture-config", "/nonexistent.yaml"]
    )
    assert args.func(args) == 2
    assert "cannot read fixture file /nonexistent.yaml" in capsys.readouterr().err


DOC = Path(__file__).resolve().parents[2] / "docs" / "devices.md"


def _dmx_section() -> str:
    text = DOC.read_text()
    return text[text.index("## DMX floodlights (native agent)") :]


def test_the_documented_fixture_file_and_command_are_valid(tmp_path: Path) -> None:
    section = _dmx_section()
    match = re.search(r"^```yaml fixture-config\n(.*?)^```$", section, re.S | re.M)
    assert match, "docs/devices.md shows a fixture file"
    path = tmp_path / "fixtures.yaml"
    path.write_text(match.group(1))
    loaded = load(path)
    assert loaded.output == "sacn" and len(loaded.heads()) == 2
    command = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    assert command, "docs/devices.md shows an agent command"
    words = shlex.split(command.group(1).replace("\\\n", " "), comments=True)
    assert words[:2] == ["illuminate", "agent"]
    shown = settings(*words[2:])
    assert shown.output == "sacn" and shown.heads() == [
        Head(1, 1, Layout.DRGB, Correction.from_gains(1, 0.62, 1))
    ]
