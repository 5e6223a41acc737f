"""A run config with a few ``section.key`` values changed, its comments kept: what ``alignrec recipe-tune`` writes.

The shipped configs explain their values in comments (why each lever, where it was measured); a tuned copy that
loses them is harder to review than the original. PyYAML drops comments, so the values are edited in the text
line by line (a block-style ``section:`` with ``key: value`` lines, the common shape), and the result is checked
by parsing it back: when the edit does not give exactly the intended mapping (a flow-style section, a multi-line
value, a ``#`` inside a quoted value), the file is dumped from the parsed mapping instead, under a header that says
the comments could not be kept.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["apply_to_mapping", "tuned_config_text"]


def apply_to_mapping(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a raw config mapping with ``{"section.key": value}`` (or a top-level ``name``) set."""
    out = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        section, dot, key = dotted.partition(".")
        if not dot:
            out[section] = value
            continue
        if not isinstance(out.get(section) or {}, dict):
            raise ValueError(f"section {section!r} is not a mapping")
        out[section] = {**(out.get(section) or {}), key: value}
    return out


def _scalar(value: Any) -> str:
    """``value`` as a one-line YAML flow value (``0.003``, ``[1, 5]``, ``'a: b'``)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


_KEY_LINE = r"^(?P<head>{indent}{key}:)(?P<gap>[ \t]*)(?P<value>[^#\n]*?)(?P<comment>[ \t]+#.*)?$"


def _set_line(line: str, pattern: str, value: str) -> str | None:
    """``line`` with its value replaced (its comment kept in the same column where it fits); None: no match."""
    body, newline = (line[:-1], "\n") if line.endswith("\n") else (line, "")
    m = re.match(pattern, body)
    if m is None or not m.group("value").strip():  # no match, or a block value on the next lines
        return None
    new = f"{m.group('head')} {value}"
    comment = m.group("comment")
    if comment:
        gap = len(comment) - len(comment.lstrip(" \t"))
        column = len(body) - len(comment) + gap
        new += " " * max(column - len(new), min(gap, 2)) + comment.lstrip(" \t")
    return new + newline


def _edit(lines: list[str], dotted: str, value: str) -> bool:
    """Set one ``section.key`` (or top-level key) in ``lines`` in place; False when the text has no simple place."""
    section, dot, key = dotted.partition(".")
    if not dot:  # a top-level scalar such as name
        for i, line in enumerate(lines):
            new = _set_line(line, _KEY_LINE.format(indent="", key=re.escape(section)), value)
            if new is not None:
                lines[i] = new
                return True
        return False
    head = next((i for i, line in enumerate(lines) if re.match(rf"^{re.escape(section)}:[ \t]*(#.*)?$", line.rstrip("\n"))),
                None)
    if head is None:
        return False
    end = head + 1  # the section's body: every line up to the next top-level key
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    content = [i for i in range(head + 1, end) if lines[i][0] in " \t" and not lines[i].lstrip().startswith("#")]
    if not content:
        return False
    indent = re.match(r"^[ \t]*", lines[content[0]]).group(0)
    pattern = _KEY_LINE.format(indent=re.escape(indent), key=re.escape(key))
    for i in content:
        new = _set_line(lines[i], pattern, value)
        if new is not None:
            lines[i] = new
            return True
    last = max(i for i in range(head + 1, end) if lines[i].strip() and lines[i][0] in " \t")
    lines.insert(last + 1, f"{indent}{key}: {value}\n")
    return True


def tuned_config_text(source_text: str, overrides: Mapping[str, Any], header: str) -> tuple[str, bool]:
    """``(text, comments_kept)``: ``source_text`` with ``overrides`` (``{"section.key" | "name": value}``) set.

    ``header`` (comment lines) goes first either way; a ``None`` value leaves its key as the source has it.
    """
    data = yaml.safe_load(source_text) or {}
    wanted = {k: v for k, v in overrides.items() if v is not None}
    expected = apply_to_mapping(data, wanted)
    lines = source_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    kept = all(_edit(lines, dotted, _scalar(value)) for dotted, value in wanted.items())
    if kept:
        text = "".join(lines)
        try:
            kept = yaml.safe_load(text) == expected
        except yaml.YAMLError:
            kept = False
    if kept:
        return header + "# The comments below are the source's, written for its own values.\n" + text, True
    note = "# The source's comments could not be kept: this file is dumped from its parsed values.\n"
    return header + note + yaml.safe_dump(expected, sort_keys=False), False
