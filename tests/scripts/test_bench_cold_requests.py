"""scripts/bench_cold.py --requests_file (scripts/bench_cold_requests.py): the request table on the cold run's model
(a tiny random Llama, stubbed loading) and a MiniLM stand-in, exact where the retriever's answer is known, the other
part's requests never read, and the output unchanged without the flag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from recdata.evaluation import load_per_user
from sft_tasks import item_text, write_requests
from tests.inference.test_cli import tiny_run  # noqa: F401 (fixture)
from tests.recdata.test_cold_slice import cold_split_of
from tests.scripts import load_script
from tests.scripts.test_bench_cold import fake_run

TEXT_FIELDS = ["title", "brand", "categories", "description"]  # the retriever's item text (minilm_retriever)
MARKER = "PLANTED-OTHER-PART"
RUN_KEYS = {"config", "overrides", "cold_item_fraction", "run_dir", "part", "metrics", "split", "rows", "versus_ours"}


@pytest.fixture
def bench():
    return load_script("bench_cold")


@pytest.fixture
def text_encoder(monkeypatch):
    """MiniLM stand-in: every distinct text its own axis, so a request equal to an item's text finds that item at
    cosine 1 and every other item at 0."""
    import alignrec.llm.text_encoders as encoders

    axes: dict[str, int] = {}

    def encode(texts, model_dir, device="cpu", **_):
        out = np.zeros((len(texts), 64), dtype=np.float32)  # [texts, D]
        for row, text in enumerate(texts):
            out[row, axes.setdefault(text, len(axes))] = 1.0
        return out

    monkeypatch.setattr(encoders, "encode_sentence", encode)


def _requests(split, part: str, marker: str = "") -> list[dict]:
    """One request per example of ``part``: the target's own retriever text (with ``marker`` in front)."""
    items = split.dataset.item_table()
    return [{"request_id": f"{part}-{e['user_id']}", "part": part, "user_id": e["user_id"],
             "history": list(e["history"]), "target": e["target"],
             "request": f"{marker} {item_text(items[e['target']], TEXT_FIELDS, 48)}".strip()}
            for e in split.eval_examples(part)]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "evaluate": {"ks": [1, 10], "num_beams": 10,
                                                              "encoder_dir": str(tmp_path / "encoder")}}))
    return path


def _fake_pipeline(monkeypatch, bench, split, tasks=("seqrec", "query2item")) -> None:
    """``run_and_read`` leaves the cold run as the pipeline would: split, evaluation, tasks build, served model."""
    def run_and_read(cfg, source_dir, until):
        run_dir = cfg.run_dir
        fake_run(run_dir, split, part=cfg.sections["evaluate"]["part"])
        train = datasets.Dataset.from_dict({"prompt": ["A user is searching for: pipette. Recommend an item."] * 2,
                                            "completion": ["<a_0>"] * 2, "task": list(tasks)})
        datasets.DatasetDict({"train": train}).save_to_disk(str(run_dir / "tasks" / "dataset"))
        (run_dir / "train" / "model").mkdir(parents=True)
        return {"run_dir": str(run_dir)}

    monkeypatch.setattr(bench, "run_and_read", run_and_read)


def _main(bench, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "cold.json"
    assert bench.main([str(_config(tmp_path)), "--runs_dir", str(tmp_path / "runs"), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_without_requests_file_the_output_is_unchanged(bench, tmp_path, tiny_split, monkeypatch):
    _fake_pipeline(monkeypatch, bench, cold_split_of(tiny_split, "i5"))
    data, md = _main(bench, tmp_path)
    assert set(data) == RUN_KEYS
    run_dir = Path(data["run_dir"])
    assert md == bench.render(bench.cold_rows(run_dir, "valid"), "Cold items: t, valid targets, cold fraction 0.1")
    assert "Requests in words" not in md and not list(run_dir.glob("requests_*"))


@pytest.mark.usefixtures("tiny_run", "text_encoder")
def test_request_table_is_exact_for_the_retriever_and_reads_no_test_request(bench, tmp_path, tiny_split, monkeypatch):
    split = cold_split_of(tiny_split, "i5")
    _fake_pipeline(monkeypatch, bench, split)
    write_requests(_requests(split, "valid") + _requests(split, "test", MARKER), tmp_path / "r.jsonl")
    data, md = _main(bench, tmp_path, "--requests_file", str(tmp_path / "r.jsonl"))
    assert set(data) == RUN_KEYS | {"requests"}
    requests, run_dir = data["requests"], Path(data["run_dir"])
    assert requests["trained_on_query2item"] and requests["metrics"] == ["recall@10", "ndcg@10"]
    for task in ("request", "request_history"):
        table = requests["tasks"][task]
        assert table["n"] == 5 and set(table["rows"]) == {"alignrec", "minilm retriever"}
        per_user = load_per_user(run_dir / f"requests_{task}")
        assert all(r.startswith("valid-") for r in per_user["alignrec"]["user_id"])  # no test request scored
        retriever = table["rows"]["minilm retriever"]  # each request is its target's own text: rank 1
        assert {(v["mean"], v["low"], v["high"]) for v in retriever.values()} == {(1.0, 1.0, 1.0)}
        assert table["mix_weight"] == 0.0  # every weight gives NDCG 1 on the valid requests: the smallest wins
        ours = float(np.mean(per_user["alignrec"]["ndcg@10"]))
        assert table["rows"]["alignrec"]["ndcg@10"]["mean"] == pytest.approx(ours)
        versus = table["versus_retriever"]["ndcg@10"]
        assert versus["users"] == 5 and versus["mean_diff"] == pytest.approx(ours - 1.0)
        assert MARKER not in (run_dir / f"requests_{task}.jsonl").read_text()  # the copy the library read
    assert "## Requests in words, valid part\n" in md and "(model not trained on query2item)" not in md
    assert "request: 5, request_history: 5 valid requests from `r.jsonl` (its test requests are not read)" in md
    assert "| request | minilm retriever | 5 | 1.0000 [1.0000, 1.0000] | 1.0000 [1.0000, 1.0000] |" in md
    assert "| request_history | alignrec | 5 |" in md and "| task: alignrec - minilm retriever |" in md


@pytest.mark.usefixtures("tiny_run", "text_encoder")
def test_on_test_targets_only_request_history_reads_the_valid_requests_and_the_untrained_model_is_named(
        bench, tmp_path, tiny_split, monkeypatch):
    requests_module = load_script("bench_cold_requests")
    split = cold_split_of(tiny_split, "i5")
    _fake_pipeline(monkeypatch, bench, split, tasks=("seqrec", "seqrec"))
    run_cfg = bench.cold_run_config(bench.load_run_config(_config(tmp_path), runs_dir=str(tmp_path / "runs")),
                                    0.1, "test")
    bench.run_and_read(run_cfg, None, "evaluate")
    write_requests(_requests(split, "valid", MARKER) + _requests(split, "test"), tmp_path / "r.jsonl")
    result = requests_module.request_table(run_cfg, tmp_path / "r.jsonl", "test", resamples=200)
    assert not result["trained_on_query2item"] and result["trained_tasks"] == ["seqrec"]
    assert {t: v["n"] for t, v in result["tasks"].items()} == {"request": 5, "request_history": 5}
    copies = {t: (run_cfg.run_dir / f"requests_{t}.jsonl").read_text() for t in result["tasks"]}
    assert MARKER not in copies["request"] and copies["request_history"].count(MARKER) == 5  # the mix weight's
    md = "\n".join(requests_module.render_requests(result, 200))
    assert "## Requests in words, test part (model not trained on query2item)" in md
    assert "its valid requests are read only for the weights chosen on them" in md


@pytest.mark.parametrize(("row", "message"), [
    ({"request_id": "x", "part": "train"}, r"r\.jsonl:6: part 'train' is neither valid nor test"),
    ({"request_id": "x", "part": None}, r"r\.jsonl:6: part None is neither valid nor test"),
    ({"target": "i1"}, r"request 'valid-u1' \(part valid\) names user 'u1' and target 'i1', no valid example"),
])
def test_a_row_whose_part_cannot_be_trusted_fails_in_one_line(bench, tmp_path, tiny_split, monkeypatch, capsys,
                                                              row, message):
    """Before any model loads: a row whose part is not valid / test, or one marked valid about another target than
    its user's valid one (u1's is i4: a mislabelled row would score another part's target)."""
    split = cold_split_of(tiny_split, "i5")
    _fake_pipeline(monkeypatch, bench, split)
    rows = _requests(split, "valid")
    rows = [*rows[1:], {**rows[0], **row}] if "target" in row else [*rows, {**rows[0], **row}]
    write_requests(rows, tmp_path / "r.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        _main(bench, tmp_path, "--requests_file", str(tmp_path / "r.jsonl"))
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_info.value.code == 1 and len(errors) == 1 and re.search(message, errors[0]), errors


def test_request_prior_row_gets_its_own_exact_paired_table_against_the_retriever(tmp_path):
    """task_rows / render_requests with the prior row: scripted lists (ours: ranks 2, miss, miss, miss; prior: all
    first; retriever: first, miss, first, miss), so every mean and paired difference is known exactly."""
    from inference.requests import request_examples
    from recdata.evaluation import evaluate_recommender, write_report

    requests_module = load_script("bench_cold_requests")
    rows = [{"request_id": f"test-u{n}", "part": "test", "user_id": f"u{n}", "history": [], "target": f"t{n}",
             "request": f"need {n}"} for n in range(4)]
    catalogue = [f"t{n}" for n in range(4)] + ["x"]
    lists = {"alignrec": lambda n: ["x", f"t{n}"] if n == 0 else ["x"],
             "alignrec + request prior": lambda n: [f"t{n}"],
             "minilm retriever": lambda n: [f"t{n}"] if n % 2 == 0 else ["x"]}
    examples = request_examples(rows, "test", False)
    reports = {name: evaluate_recommender(
        lambda ids, histories, make=make: [[(i, 0.0) for i in make(int(r[-1]))] for r in ids], examples, [10],
        catalogue, show_progress=False) for name, make in lists.items()}
    out = tmp_path / "requests_request"
    write_report(reports, out, extra={"retriever": {"mix_weight": 0.0, "valid_ndcg@10_by_weight": {}},
                                      "request_prior": {"weight": 30.0, "valid_ndcg@10_by_weight": {"30.0": 0.5}}})
    table = requests_module.task_rows(out, {r["request_id"] for r in rows}, resamples=200)
    assert list(table["rows"]) == ["alignrec", "alignrec + request prior", "minilm retriever"]
    assert table["rows"]["alignrec + request prior"]["recall@10"]["mean"] == 1.0
    assert table["rows"]["alignrec"]["ndcg@10"]["mean"] == pytest.approx(1 / np.log2(3) / 4)
    prior = table["request_prior"]
    assert prior["weight"] == 30.0 and prior["versus_retriever"]["recall@10"]["mean_diff"] == pytest.approx(0.5)
    assert table["versus_retriever"]["recall@10"]["mean_diff"] == pytest.approx(0.25 - 0.5)
    result = {"metrics": table["metrics"], "part": "test", "tasks": {"request": table}, "requests_file": "r.jsonl",
              "trained_on_query2item": True}
    md = "\n".join(requests_module.render_requests(result, 200))
    assert "prior weight (request 30) chosen on the valid requests by NDCG@10" in md
    assert "| request | alignrec + request prior | 4 | 1.0000 [1.0000, 1.0000] | 1.0000 [1.0000, 1.0000] |" in md
    assert "| task: alignrec + request prior - minilm retriever |" in md
    assert "| request | +0.5000 [" in md.split("task: alignrec + request prior")[1]
