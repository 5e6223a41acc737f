"""`alignrec evaluate` end to end on the tiny split (model loading stubbed: the trainer is tested elsewhere)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.cli import EvaluateConfig


@pytest.fixture
def tiny_run(tiny_split, tiny_chat_tokenizer, tiny_llama, monkeypatch):
    """Patch ``trainer.load_for_inference`` to return a tiny model coded over the tiny split's catalogue."""
    import trainer
    from tokenization import ItemTokenizer

    items = tiny_split.dataset.item_ids()
    codes = np.array([[i // 4, i % 4 // 2, i % 2] for i in range(len(items))])
    item_tok = ItemTokenizer.from_codes(items, codes, [2, 2, 2])
    item_tok.add_to_tokenizer(tiny_chat_tokenizer)
    model = tiny_llama.eval()
    model.resize_token_embeddings(len(tiny_chat_tokenizer), mean_resizing=False)
    calls = []

    def fake_load(output_dir, device=None, **_):
        calls.append(str(output_dir))
        return model, tiny_chat_tokenizer, item_tok

    monkeypatch.setattr(trainer, "load_for_inference", fake_load, raising=False)
    monkeypatch.setattr(trainer, "read_user_knowledge", lambda output_dir: None, raising=False)  # no run folder
    monkeypatch.setattr(trainer, "read_item_head_weight", lambda output_dir: 0.0, raising=False)
    monkeypatch.setattr(trainer, "read_prompt_format", lambda output_dir: "chat", raising=False)
    return calls


def test_evaluate_cli_writes_model_and_baseline_tables(tiny_split, tiny_run, tmp_path):
    from alignrec.cli import main

    tiny_split.save(tmp_path / "split")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model_dir", str(tmp_path / "run"), "--split_dir", str(tmp_path / "split"),
               "--out_dir", str(out), "--ks", "1", "5", "--num_beams", "8", "--exclude_history", "true"])
    assert rc == 0 and tiny_run == [str(tmp_path / "run")]
    data = json.loads((out / "metrics.json").read_text())
    model_rep, pop_rep = data["recommenders"]["alignrec"], data["recommenders"]["popularity"]
    assert model_rep["n_examples"] == pop_rep["n_examples"] == 5
    assert model_rep["invalid_rate"] == 0.0
    # 8 items minus each history (4, 3, 2, 5, 2 items), capped at 5: 4 + 5 + 5 + 3 + 5
    assert model_rep["total_outputs"] == pop_rep["total_outputs"] == 22
    assert model_rep["short_list_rate"] == pytest.approx(2 / 5)
    assert data["config"]["EvaluateConfig"]["exclude_history"] is True
    assert data["sample"] == {"examples": 5, "of": 5, "sampled": False, "seed": None}
    md = (out / "metrics.md").read_text()
    assert "| alignrec | 5 |" in md and "| popularity | 5 |" in md


def test_evaluate_cli_max_examples_scores_a_seeded_sample_and_records_it(tiny_split, tiny_run, tmp_path):
    from alignrec.cli import main
    from recdata.evaluation import load_per_user, sample_examples

    tiny_split.save(tmp_path / "split")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model_dir", str(tmp_path / "run"), "--split_dir", str(tmp_path / "split"),
               "--out_dir", str(out), "--ks", "1", "2", "--num_beams", "4", "--max_examples", "3"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["sample"] == {"examples": 3, "of": 5, "sampled": True, "seed": 0}
    expected = sample_examples(tiny_split.eval_examples("test"), 3, seed=0)["user_id"]
    assert expected != tiny_split.eval_examples("test")["user_id"][:3]  # seed 0 does not pick the first three
    for table in load_per_user(out).values():
        assert table["user_id"] == expected


def test_evaluate_cli_refuses_a_catalogue_the_model_cannot_code(tiny_split, tiny_run, tmp_path, monkeypatch):
    import trainer

    model, hf_tok, item_tok = trainer.load_for_inference("x")
    from tokenization import ItemTokenizer

    partial = ItemTokenizer.from_codes(item_tok.item_ids[:-1], item_tok.codes[:-1], item_tok.codebook_sizes)
    monkeypatch.setattr(trainer, "load_for_inference", lambda *a, **k: (model, hf_tok, partial))
    tiny_split.save(tmp_path / "split")
    cfg = EvaluateConfig(model_dir="run", split_dir=str(tmp_path / "split"), out_dir=str(tmp_path / "o"))
    from inference.cli import run_evaluate

    with pytest.raises(ValueError, match="1 catalogue item\\(s\\) .* have no code .*'i8'"):
        run_evaluate(cfg)
    assert not (tmp_path / "o").exists()  # refused before claiming: no empty claimed folder is left behind


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"part": "train"}, "part must be 'valid' or 'test'"),
        ({"ks": [0, 5]}, "ks must be positive"),
        ({"ks": [1, 50], "num_beams": 20}, "num_beams \\(20\\) must be >= max\\(ks\\) \\(50\\)"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_examples": 0}, "max_examples"),
    ],
)
def test_evaluate_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvaluateConfig(model_dir="m", split_dir="s", out_dir="o", **kwargs)


def test_evaluate_is_registered():
    from alignrec.cli import build_parser

    parser = build_parser()
    args, rest = parser.parse_known_args(["evaluate", "--num_beams", "4"])
    assert args.handler.__name__ == "_run_evaluate" and rest == ["--num_beams", "4"]
