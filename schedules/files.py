"""Loading the sites and campaign files (YAML), with errors that name file and path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schedules.model import Campaign, SiteCatalog

MAX_FILE_BYTES = 2 * 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class ScheduleFileError(ValueError):
    """A file that cannot be used. The message names the file, the path and the fault."""


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def parse_document(model: type[M], data: Any, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        errors = exc.errors()
        deeper = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
        for err in errors:
            if err["type"] == "too_short" and tuple(err["loc"]) in deeper:
                continue  # "no windows" only because every window failed: say why instead
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {_path(tuple(err['loc']))}: {msg}")
        raise ScheduleFileError("\n".join(lines)) from None


class Yaml12Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.2 booleans: only true/false. In YAML 1.1 `on`, `off`, `yes` and `no` are
    booleans too, which would turn the key `on:` into True (and a site named `no` into
    False). Every YAML file of the product is read with it."""


_Loader = Yaml12Loader
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def read_yaml(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScheduleFileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScheduleFileError(f"{path}: {len(raw)} bytes is over {MAX_FILE_BYTES}")
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ScheduleFileError(f"{path}: not valid YAML: {exc}") from None


def load_sites(path: Path) -> SiteCatalog:
    return parse_document(SiteCatalog, read_yaml(path), str(path))


def load_campaign(path: Path) -> Campaign:
    return parse_document(Campaign, read_yaml(path), str(path))
