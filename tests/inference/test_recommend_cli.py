"""``alignrec recommend``: one history or user -> top-K with titles (model loading stubbed as in test_cli)."""

from __future__ import annotations

import json

import pytest

from tests.cli.bad_inputs import error_lines, run_cli
from tests.inference.test_cli import tiny_run  # noqa: F401  (patches trainer.load_for_inference)


@pytest.fixture
def run_dir(tiny_split, tmp_path):
    """The pipeline layout: <run>/data/split beside <run>/train/model (found without --split_dir)."""
    tiny_split.save(tmp_path / "run" / "data" / "split")
    return tmp_path / "run"


def test_history_gives_k_titled_items_not_in_history(tiny_split, tiny_run, run_dir, capsys):  # noqa: F811
    from alignrec.cli import main

    history = tiny_split.dataset.item_ids()[:2]
    rc = main(["recommend", "--model_dir", str(run_dir / "train" / "model"), "--history", ",".join(history),
               "--k", "3", "--num_beams", "8", "--json", "true"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    titles = {row["item_id"]: row["title"] for row in tiny_split.dataset.items}
    recs = result["recommendations"]
    assert [r["rank"] for r in recs] == [1, 2, 3]
    assert not {r["item_id"] for r in recs} & set(history)  # exclude_history defaults to true
    assert all(r["title"] == titles[r["item_id"]] for r in recs)
    assert [h["title"] for h in result["history"]] == [titles[i] for i in history]
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)


def test_user_uses_their_serving_history(tiny_split, tiny_run, run_dir, capsys):  # noqa: F811
    from alignrec.cli import main

    user, history = next(iter(tiny_split.serving_histories().items()))
    assert main(["recommend", "--model_dir", str(run_dir / "train" / "model"), "--user", user, "--k", "2",
                 "--num_beams", "8"]) == 0
    table = capsys.readouterr().out
    assert f"history ({len(history)} items" in table and "recommendations:" in table


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--history", "nope,x"], 1, "2 history item(s) have no code"),
    (["--user", "ghost"], 1, "user 'ghost' is not in"),
    ([], 2, "give exactly one of --history"),
    (["--history", "a", "--k", "30", "--num_beams", "5"], 2, "num_beams (5) must be >= k (30)"),
])
def test_bad_requests_are_one_line(tiny_run, run_dir, extra, code, message):  # noqa: F811
    out = run_cli(["recommend", "--model_dir", str(run_dir / "train" / "model"), *extra])
    lines = error_lines(out.stderr)
    assert out.code == code and len(lines) == 1 and message in lines[0], (out.code, lines)
