"""Control characters leave item text at load with one counted warning; terminal output shows them escaped."""

from __future__ import annotations

import json
import logging

from recdata.text_safety import clean_text, terminal_safe

ANSI_TITLE = "\x1b[31mRed\x1b[0m pipette\x1b]0;pwned\x07"


def test_load_strips_control_characters_with_one_counted_warning(tmp_path, caplog):
    import pandas as pd

    from recdata.loaders import LoadOptions, load_dataset

    folder = tmp_path / "shop"
    folder.mkdir()
    pd.DataFrame({"user_id": ["u1", "u1", "u1"], "item_id": ["i1", "i2", "i3"], "timestamp": [1, 2, 3]}).to_csv(
        folder / "interactions.csv", index=False)
    titles = {"i1": ANSI_TITLE, "i2": "evil\u202etxt.exe\x00 name", "i3": "Plain title"}
    pd.DataFrame({"item_id": list(titles), "title": list(titles.values()),
                  "description": ["line one\r\nline two", "", ""]}).to_parquet(folder / "items.parquet")
    with caplog.at_level(logging.WARNING, logger="recdata.text_safety"):
        ds = load_dataset(folder, "tabular", LoadOptions())
    table = ds.item_table()
    assert table["i1"]["title"] == "Red pipette"
    assert table["i2"]["title"] == "eviltxt.exe name"
    assert table["i3"]["title"] == "Plain title"
    assert table["i1"]["description"] == "line one line two"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    title_warnings = [w for w in warnings if "in their title" in w]
    assert len(title_warnings) == 1 and "2 item(s)" in title_warnings[0] and "'i1'" in title_warnings[0]
    assert sum("in their description" in w for w in warnings) == 1


def test_clean_text_is_idempotent_and_keeps_plain_text():
    assert clean_text("Toy Story (1995) <b>") == "Toy Story (1995) <b>"
    assert clean_text(clean_text(ANSI_TITLE)) == clean_text(ANSI_TITLE) == "Red pipette"


def test_terminal_safe_escapes_ansi_and_bidi_and_keeps_lines():
    shown = terminal_safe(f"title: {ANSI_TITLE}\nnext\u202eline\r")
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown and "\r" not in shown
    assert "\\u001b[31m" in shown and "\\u202e" in shown and "\n" in shown
    assert json.loads(terminal_safe(json.dumps({"t": "a\u202eb\x85"}, ensure_ascii=False))) == {"t": "a\u202eb\x85"}


def test_recommend_table_prints_titles_safely(capsys, monkeypatch):
    from inference import recommend_cli

    result = {"history": [{"item_id": "i1", "title": ANSI_TITLE}],
              "recommendations": [{"rank": 1, "item_id": "i2", "score": -0.5, "title": "x\u202ey"}]}
    monkeypatch.setattr(recommend_cli, "recommend_for", lambda cfg: result)
    from types import SimpleNamespace

    monkeypatch.setattr(recommend_cli, "parse_config", lambda types, argv: (SimpleNamespace(json=False),))
    recommend_cli._run_recommend(None, [])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\\u001b[31mRed" in out
