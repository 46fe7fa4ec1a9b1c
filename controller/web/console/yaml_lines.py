"""Campaign YAML as the console checks it: each fault placed on the line it is about.

`check_yaml(text)` reads the text with the product's YAML 1.2 loader, validates it as a
`Campaign` (the same `parse_document` as `illuminate schedules apply` and the API's
PUT), and answers either the campaign or the faults, each with its path (as the API
names it: `windows[0].start.at`) and the 1-based line of the YAML it is about:

- a YAML syntax error: the line the parser stopped at;
- a field with a bad value: the line of that value;
- an unknown key, or a field whose value spans lines: the line of the key;
- a missing field: the line of the mapping that lacks it;
- a fault of the whole campaign (`(top)`): line 1.

Anchors and aliases are refused (a campaign needs none, and nested aliases would make
the validation walk an exponential tree), and so is YAML nested too deeply to read.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from controller.campaigns import TOP
from schedules.files import ScheduleFileError, Yaml12Loader, parse_document
from schedules.model import Campaign

SOURCE = "yaml"
_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_LINE = re.compile(r"^(?:(?:\(top\)|[^\s:]+): )?(.*)$")


@dataclass(frozen=True)
class Fault:
    path: str
    message: str
    line: int
    """1-based line of the text the fault is about."""


def path_parts(path: str) -> list[str | int]:
    """`windows[0].start.at` as ['windows', 0, 'start', 'at']; `(top)` as []."""
    if path == TOP:
        return []
    return [int(i) if i else str(k) for i, k in _PART.findall(path)]


def line_of(root: yaml.Node | None, path: str) -> int:
    """The 1-based line of the node at `path` (a missing one: its nearest ancestor's; an
    unknown key: the key's own line)."""
    if root is None:
        return 1
    node: yaml.Node = root
    parts = path_parts(path)
    for index, part in enumerate(parts):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    # the last part: the line of its key (`end:` over a nested mapping)
                    child = key if index == len(parts) - 1 else value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _first_alias(root: yaml.Node | None) -> int | None:
    """The line of the first node met twice (an alias), or None. A campaign needs no
    aliases, and a few nested ones would make validation walk an exponential tree."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return int(node.start_mark.line) + 1
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return None


def _items(text: str) -> list[tuple[str, str]]:
    """`yaml: windows[0].start.at: message` lines as (path, message)."""
    items = []
    for raw in text.splitlines():
        rest = raw.removeprefix(f"{SOURCE}: ")
        path, sep, message = rest.partition(": ")
        if sep and path and " " not in path:
            items.append((path, message))
        elif rest.strip():
            items.append((TOP, rest))
    return items or [(TOP, text or "invalid")]


def check_yaml(text: str) -> Campaign | list[Fault]:
    """The campaign the text describes, or its faults (each with its line)."""
    try:
        root = yaml.compose(text, Loader=Yaml12Loader)
        alias = _first_alias(root)
        if alias is not None:
            return [Fault(TOP, "anchors and aliases (& and *) are not taken here", alias)]
        data: Any = yaml.load(text, Loader=Yaml12Loader)
    except RecursionError:
        return [Fault(TOP, "the YAML is nested too deeply", 1)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problem = exc.problem or "not valid YAML"
        return [Fault(TOP, f"not valid YAML: {problem}", line)]
    except yaml.YAMLError as exc:
        return [Fault(TOP, f"not valid YAML: {exc}", 1)]
    if not isinstance(data, dict):
        return [Fault(TOP, "the campaign must be a YAML mapping (key: value lines)", 1)]
    try:
        return parse_document(Campaign, data, SOURCE)
    except ScheduleFileError as exc:
        return [Fault(p, m, line_of(root, p)) for p, m in _items(str(exc))]


def faults_at(text: str, path: str, message: str) -> list[Fault]:
    """One fault found later (by the checks against the sites), placed on its line."""
    try:
        root = yaml.compose(text, Loader=Yaml12Loader)
    except yaml.YAMLError:
        root = None
    return [Fault(path, message, line_of(root, path))]
