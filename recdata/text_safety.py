"""Catalogue text is data, never control: control characters leave item text at load, terminals get escaped text.

Two rules, each in one place:

- At load (``clean_item_text``, called by ``recdata.loaders.common.make_dataset``, which every loader goes
  through): ANSI escape sequences, C0/C1 control characters (NUL, ESC, ...) and Unicode bidi / direction controls
  (U+202E ...) are removed from the item text fields; tab, CR and LF become a space (a title is one line). One
  warning per field gives the count and an example item id, so the change is never silent.
- At print (``terminal_safe``): every print of user data (titles, prompts, ids) goes through it, so whatever a
  file holds cannot move the cursor, recolour or reorder the terminal: those characters are shown escaped
  (``\\u001b``, ``\\u202e``). Newlines and tabs stay (a prompt preview spans lines).

What stops item text from becoming special or code tokens in a prompt is the tokenizer-aware rule in
``alignrec.llm.inert_text`` (it needs the tokenizer's added tokens, a layer above this one).
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["CONTROL_PATTERN", "clean_item_text", "clean_text", "strip_controls", "terminal_safe"]

_ANSI = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]"  # CSI, OSC, two-byte escapes
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # marks, embeddings, overrides, isolates
_CONTROLS = f"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}"  # C0 except tab / LF / CR, DEL, C1, bidi
CONTROL_PATTERN = re.compile(f"{_ANSI}|[{_CONTROLS}]|[\t\r\n]")
_REMOVE = re.compile(f"{_ANSI}|[{_CONTROLS}]")
_LINE_BREAKS = re.compile(r"[\t\r\n]+")
_TERMINAL_UNSAFE = re.compile(f"[{_CONTROLS}\r]")


def clean_text(text: str) -> str:
    """``text`` without ANSI sequences and control / bidi characters; tab, CR and LF runs become one space."""
    return _LINE_BREAKS.sub(" ", _REMOVE.sub("", text))


def strip_controls(text: str) -> str:
    """``text`` without ANSI sequences and control / bidi characters; tab, CR and LF kept (text that did not pass
    through ``clean_item_text``, e.g. LLM-written knowledge, may hold paragraphs)."""
    return _REMOVE.sub("", text)


def clean_item_text(items: Any, source: str, fields: tuple[str, ...] | None = None) -> Any:
    """The ``datasets.Dataset`` ``items`` with control characters removed from its text ``fields`` (default: the
    item text fields present); one warning per changed field with the count and an example item id. Returns
    ``items`` itself when nothing changes (the common case costs one regex scan per value)."""
    from recdata.dataset import ITEM_TEXT_FIELDS

    fields = tuple(f for f in (fields or ITEM_TEXT_FIELDS) if f in items.column_names)
    changed: dict[str, list[int]] = {f: [i for i, v in enumerate(items[f]) if v and CONTROL_PATTERN.search(v)]
                                     for f in fields}
    changed = {f: rows for f, rows in changed.items() if rows}
    if not changed:
        return items
    ids = items["item_id"]
    for field, rows in changed.items():
        logger.warning("%s: %d item(s) have control characters (ANSI escapes, NUL, bidi overrides, line breaks) in "
                       "their %s (e.g. item %r: %r); removed (line breaks and tabs became spaces)", source, len(rows),
                       field, ids[rows[0]], items[field][rows[0]][:80])

    def _clean(batch: dict[str, list]) -> dict[str, list]:
        return {f: [clean_text(v) if v else v for v in batch[f]] for f in changed}

    return items.map(_clean, batched=True, desc=None)


def _escape(match: re.Match) -> str:
    return f"\\u{ord(match.group(0)):04x}"  # also a valid JSON escape, so JSON output stays JSON


def terminal_safe(text: Any) -> str:
    """``str(text)`` fit for a terminal: control, CR and bidi characters shown escaped (``\\u001b``); newlines and
    tabs kept. Use it for every print of user data (titles, prompts, ids)."""
    return _TERMINAL_UNSAFE.sub(_escape, str(text))
