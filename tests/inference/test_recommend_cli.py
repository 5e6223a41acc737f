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


def test_request_asks_the_request_task_prompt_with_the_history_in_front(tiny_split, tiny_run, run_dir,  # noqa: F811
                                                                       capsys, monkeypatch):
    """--request decodes exactly as the request task's recommender does (same prompt, same list), with or without a
    history; the JSON carries the request."""
    import inference.requests as requests_module
    from alignrec.cli import main
    from inference.trained_run import TrainedRun

    model_dir = run_dir / "train" / "model"
    history = tiny_split.dataset.item_ids()[:2]
    for extra, with_history in ((["--history", ",".join(history)], True), ([], False)):
        assert main(["recommend", "--model_dir", str(model_dir), "--request", "something for the lab", *extra,
                     "--k", "3", "--num_beams", "8", "--json", "true"]) == 0
        result = json.loads(capsys.readouterr().out)
        run = TrainedRun.load(model_dir, device="cpu")
        fn = requests_module.llm_request_recommender(run, {"adhoc": "something for the lab"}, 3, 8, with_history)
        (want,) = fn(["adhoc"], [history if with_history else []])
        assert result["request"] == "something for the lab"
        assert [(r["item_id"], pytest.approx(r["score"])) for r in result["recommendations"]] == \
            [(i, pytest.approx(s)) for i, s in want]
        assert len(result["history"]) == (2 if with_history else 0)


def test_request_prior_puts_the_item_whose_text_matches_the_request_first(tmp_path, tiny_split, tiny_dataset,
                                                                          tiny_chat_tokenizer, tiny_llama, monkeypatch,
                                                                          capsys):
    import numpy as np

    import inference.requests as requests_module
    from alignrec.cli import main
    from alignrec.recommenders.request_retriever import TextRetriever
    from tests.inference.test_item_head_override import _head_run, _set_head

    _head_run(tmp_path / "run" / "train" / "model", tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    _set_head(tmp_path / "run" / "train" / "model", 1.0)
    tiny_split.save(tmp_path / "run" / "data" / "split")
    args = ["recommend", "--model_dir", str(tmp_path / "run" / "train" / "model"), "--request", "need it",
            "--k", "3", "--num_beams", "8", "--json", "true"]
    capsys.readouterr()  # what building the run printed
    assert main(args) == 0
    plain = [r["item_id"] for r in json.loads(capsys.readouterr().out)["recommendations"]]
    items = tiny_split.dataset.item_ids()
    planted = next(i for i in items if i != plain[0])
    vectors = np.random.default_rng(2).normal(size=(len(items), 16))
    monkeypatch.setattr(requests_module, "minilm_retriever", lambda split, rows, encoder_dir="", device="cpu":
                        TextRetriever(items, vectors, {r["request_id"]: vectors[items.index(planted)] for r in rows}))
    assert main([*args, "--request_prior_weight", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["recommendations"][0]["item_id"] == planted
    _set_head(tmp_path / "run" / "train" / "model", None)  # a run without an item head: refused in one line
    out = run_cli([*args, "--request_prior_weight", "100"])
    lines = error_lines(out.stderr)
    assert out.code != 0 and len(lines) == 1 and "trained without an item head" in lines[0], lines


@pytest.mark.parametrize(("extra", "message"), [
    (["--history", "a", "--request_prior_weight", "5"], "--request_prior_weight reads a request's words"),
    (["--request", "x", "--popularity_penalty", "0.5"], "--request decodes as the request task does"),
])
def test_bad_request_options_are_one_line(tiny_run, run_dir, extra, message):  # noqa: F811
    out = run_cli(["recommend", "--model_dir", str(run_dir / "train" / "model"), *extra])
    lines = error_lines(out.stderr)
    assert out.code != 0 and len(lines) == 1 and message in lines[0], (out.code, lines)
