"""Requests in words: built from valid / test targets, never a training prompt, scored exactly, leaks refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alignrec.cli import main
from alignrec.recommenders.request_retriever import TextRetriever, choose_mix_weight
from inference.requests import request_examples
from recdata.errors import UserError
from recdata.evaluation import evaluate_recommender
from sft_tasks import (
    TaskConfig,
    build_requests,
    check_requests_unseen,
    load_requests,
    request_prompt,
    write_requests,
)
from sft_tasks.context import TaskContext
from sft_tasks.queries import attribute_queries, build_query2item
from sft_tasks.requests import names_title
from sft_tasks.templates import QUERY_GENERATION_PROMPT, REQUEST_GENERATION_PROMPT
from tests.inference.test_cli import tiny_run  # noqa: F401 (fixture)
from tests.sft_tasks.sft_helpers import synthetic_split

ROWS = [  # hand-made request rows: three test requests, one valid
    {"request_id": "test-u1", "part": "test", "user_id": "u1", "history": ["h1", "h2"], "target": "t1",
     "request": "something to keep my hands dry"},
    {"request_id": "test-u2", "part": "test", "user_id": "u2", "history": ["h3"], "target": "t2",
     "request": "a way to weigh powders"},
    {"request_id": "test-u3", "part": "test", "user_id": "u3", "history": [], "target": "t3",
     "request": "glass for heating liquids"},
    {"request_id": "valid-u1", "part": "valid", "user_id": "u1", "history": ["h1"], "target": "h2",
     "request": "more of the same"},
]
CATALOGUE = ["t1", "t2", "t3", "h1", "h2", "h3", "x"]


def _scripted_requests(asked):
    """make_generator: a request from the last words of the item text (what a request-writing LLM might say)."""
    def make():
        def generate(prompts):
            asked.extend(prompts)
            return [f"I need {' '.join(p.split()[-4:])} for work" for p in prompts]
        return generate
    return make


@pytest.fixture
def synthetic():
    return synthetic_split()


@pytest.fixture
def query2item_rows(synthetic, tiny_hf_tokenizer):
    split, item_tokenizer = synthetic
    ctx = TaskContext(TaskConfig(max_templates=1), split, item_tokenizer, tiny_hf_tokenizer)
    task = build_query2item(ctx)
    return ctx, [task.example(i)["prompt"] for i in range(len(task))]


def test_request_prompt_is_the_query2item_training_prompt(query2item_rows, tiny_hf_tokenizer):
    ctx, prompts = query2item_rows
    queries = attribute_queries(ctx.items, ctx.item_ids, ctx.cfg.query_keywords, ctx.cfg.queries_per_item,
                                ctx.rng("query2item"))  # the build's first draw of the same seeded generator
    expected = [request_prompt(q, tiny_hf_tokenizer, "chat") for i in ctx.item_ids for q in queries.get(i, [])]
    assert prompts == expected  # template 0, same format: a request is asked the way query2item trained


def test_requests_describe_held_out_targets_and_no_request_is_a_training_row(tmp_path, synthetic, query2item_rows):
    split, _ = synthetic
    asked: list[str] = []
    rows = build_requests(split, tmp_path / "cache.jsonl", "m1", _scripted_requests(asked), per_part=5, seed=3)
    assert REQUEST_GENERATION_PROMPT != QUERY_GENERATION_PROMPT
    assert [r["part"] for r in rows] == ["valid"] * 5 + ["test"] * 5 and len(asked) == 10
    for part in ("valid", "test"):
        targets = {e["user_id"]: e["target"] for e in split.eval_examples(part)}
        for row in (r for r in rows if r["part"] == part):
            assert row["target"] == targets[row["user_id"]] and row["request_id"] == f"{part}-{row['user_id']}"
    items = split.dataset.item_table()
    assert all(items[r["target"]]["title"] in p for r, p in zip(rows, asked, strict=True))
    _, train_prompts = query2item_rows
    for row in rows:  # no evaluation request string appears in a query2item training row
        assert all(row["request"].lower() not in p.lower() for p in train_prompts), row
    check_requests_unseen(rows, train_prompts, "query2item")
    again = build_requests(split, tmp_path / "cache.jsonl", "m1", lambda: pytest.fail("cached"), per_part=5, seed=3)
    assert again == rows  # cached and seeded: the same requests without the LLM
    write_requests(rows, tmp_path / "r.jsonl")
    assert load_requests(tmp_path / "r.jsonl", split.dataset.item_ids()) == rows


@pytest.mark.parametrize(("said", "title", "named"), [
    ("The Lost in Space is a sci-fi thriller with a touch of action.", "Lost in Space (1998)", True),  # the phrase
    ("The Fugitive, The (1993) (categories: Action, Thriller)", "Fugitive, The (1993)", True),  # moved article, year
    ('The customer is a product of the 1957 film "Angry Men', "12 Angry Men (1957)", True),  # 2 of its 3 words
    ("A thriller about a man on the run", "Fugitive, The (1993)", False),
    ("I want a quiet keyboard for a small desk", "Logitech K380 Keyboard", False),  # 1 of 3 words: a need, not a name
    ("anything at all", "(1995)", False),  # no title words left
])
def test_a_request_that_names_its_title_is_recognised(said, title, named):
    assert names_title(said, title) is named


def test_requests_that_name_the_target_are_left_out(tmp_path, synthetic):
    split, _ = synthetic
    items = split.dataset.item_table()

    def make():
        def generate(prompts):  # the first request names its product's title, the rest describe a need
            title = max((items[i]["title"] for i in items if items[i]["title"] in prompts[0]), key=len)
            return [f"I want {title} again"] + ["something sturdy for the lab"] * (len(prompts) - 1)
        return generate

    rows = build_requests(split, tmp_path / "cache.jsonl", "m1", make, per_part=3, seed=3, chunk=8)
    assert len(rows) == 5 and all(r["request"] == "something sturdy for the lab" for r in rows)


def test_a_planted_request_in_the_training_rows_is_refused(query2item_rows):
    _, train_prompts = query2item_rows
    planted = [*train_prompts, f"A user is searching for: {ROWS[1]['request'].upper()}. Recommend an item."]
    check_requests_unseen(ROWS, train_prompts, "tasks")
    with pytest.raises(UserError, match=r"request 'test-u2' .* appears in the training rows of tasks"):
        check_requests_unseen(ROWS, planted, "tasks")


def test_evaluate_refuses_a_leaked_request_in_one_line(tmp_path, tiny_split, capsys):
    import datasets

    tiny_split.save(tmp_path / "split")
    rows = [{**ROWS[0], "target": "i4", "history": ["i1"]}]
    write_requests(rows, tmp_path / "r.jsonl")
    train = datasets.Dataset.from_dict({"prompt": [f"Which item fits the need \"{rows[0]['request']}\"?"],
                                        "completion": ["<a_0>"], "task": ["query2item"]})
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "tasks"))
    capsys.readouterr()  # the save's progress bar
    rc = main(["evaluate", "--model_dir", str(tmp_path / "no-model"), "--split_dir", str(tmp_path / "split"),
               "--out_dir", str(tmp_path / "out"), "--task", "request", "--requests_file", str(tmp_path / "r.jsonl"),
               "--tasks_dir", str(tmp_path / "tasks")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "'test-u1'" in err and "appears in the training rows" in err


def test_request_task_needs_its_files(tmp_path, capsys):
    assert main(["evaluate", "--model_dir", "m", "--split_dir", "s", "--out_dir", str(tmp_path / "o"),
                 "--task", "request"]) == 2
    assert "needs --requests_file" in capsys.readouterr().err


@pytest.mark.parametrize("with_history", [False, True])
def test_scripted_recommender_gives_exact_metrics(with_history):
    lists = {"test-u1": ["t1", "x"], "test-u2": ["x", "t2"], "test-u3": ["x", "h1"]}  # ranks 1, 2, miss
    seen = []

    def fn(request_ids, histories):
        seen.extend(zip(request_ids, map(list, histories), strict=True))
        return [[(i, 0.0) for i in lists[r]] for r in request_ids]

    examples = request_examples(ROWS, "test", with_history)
    rep = evaluate_recommender(fn, examples, [1, 2], CATALOGUE, show_progress=False)
    assert rep["n_examples"] == 3
    assert rep["overall"]["recall@1"] == pytest.approx(1 / 3) and rep["overall"]["recall@2"] == pytest.approx(2 / 3)
    assert rep["overall"]["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    histories = {"test-u1": ["h1", "h2"], "test-u2": ["h3"], "test-u3": []}
    assert dict(seen) == (histories if with_history else dict.fromkeys(histories, []))  # request-only: no history


def _retriever():
    items = ["a", "b", "c"]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # c is between a and b
    return TextRetriever(items, vectors, {"r1": np.array([1.0, 0.1])})


def test_retriever_ranks_by_cosine_and_mixes_the_history():
    retriever = _retriever()
    plain = retriever.recommend_fn(3)(["r1"], [[]])[0]
    unit = np.array([1.0, 0.1]) / math.hypot(1.0, 0.1)
    assert [i for i, _ in plain] == ["a", "c", "b"]
    assert [s for _, s in plain] == pytest.approx([unit[0], (unit[0] + unit[1]) / math.sqrt(2), unit[1]])
    mixed = retriever.recommend_fn(3, weight=0.5)(["r1"], [["b"]])[0]  # b excluded; query half r1, half b
    query = 0.5 * unit + 0.5 * np.array([0.0, 1.0])
    query /= np.linalg.norm(query)
    assert [i for i, _ in mixed] == ["c", "a"]
    assert [s for _, s in mixed] == pytest.approx([(query[0] + query[1]) / math.sqrt(2), query[0]])


def test_mix_weight_is_chosen_on_valid_requests():
    import datasets

    valid = datasets.Dataset.from_dict({"user_id": ["r1"], "history": [["b"]], "target": ["c"]})
    weight, table = choose_mix_weight(_retriever(), valid, [0.0, 0.5, 1.0], ["a", "b", "c"])
    # w 0: a before c (rank 2); w 0.5 and w 1: c first; ties go to the smaller weight
    assert table == pytest.approx({0.0: 1 / math.log2(3), 0.5: 1.0, 1.0: 1.0})
    assert weight == 0.5


def test_a_requests_file_for_another_split_is_refused(tmp_path):
    write_requests(ROWS, tmp_path / "r.jsonl")
    with pytest.raises(UserError, match="target 't1' is not in the catalogue"):
        load_requests(tmp_path / "r.jsonl", ["i1"])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"request_id": "x"}) + "\n")
    with pytest.raises(UserError, match="bad.jsonl:1: request row lacks"):
        load_requests(tmp_path / "bad.jsonl")


@pytest.mark.usefixtures("tiny_run")
@pytest.mark.parametrize("task", ["request", "request_history"])
def test_evaluate_cli_request_task_end_to_end(tiny_split, tmp_path, monkeypatch, task):
    """The run decodes each request (tiny model, stubbed loading); the retriever row (hand-made vectors in place of
    MiniLM) gets its mix weight from the valid requests; popularity beside."""
    import datasets

    import inference.requests as requests_module

    tiny_split.save(tmp_path / "split")
    rows = [{"request_id": f"{part}-{e['user_id']}", "part": part, "user_id": e["user_id"],
             "history": list(e["history"]), "target": e["target"], "request": f"need number {n}"}
            for part in ("valid", "test") for n, e in enumerate(tiny_split.eval_examples(part))]
    write_requests(rows, tmp_path / "r.jsonl")
    train = datasets.Dataset.from_dict({"prompt": ["A user is searching for: pipette. Recommend an item."],
                                        "completion": ["<a_0>"], "task": ["query2item"]})
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "tasks"))
    items = tiny_split.dataset.item_ids()
    rng = np.random.default_rng(0)
    monkeypatch.setattr(requests_module, "minilm_retriever", lambda split, rows, encoder_dir="": TextRetriever(
        items, rng.normal(size=(len(items), 4)), {r["request_id"]: rng.normal(size=4) for r in rows}))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model_dir", str(tmp_path / "run"), "--split_dir", str(tmp_path / "split"),
                 "--out_dir", str(out), "--ks", "1", "5", "--num_beams", "8", "--task", task,
                 "--requests_file", str(tmp_path / "r.jsonl"), "--tasks_dir", str(tmp_path / "tasks")]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["recommenders"]) == {"alignrec", "minilm retriever", "popularity"}
    for rep in data["recommenders"].values():
        assert rep["n_examples"] == 5 and rep["invalid_rate"] == 0.0
    retriever = data["retriever"]
    if task == "request":
        assert retriever == {"mix_weight": 0.0, "valid_ndcg@10_by_weight": {}}
    else:
        assert set(retriever["valid_ndcg@10_by_weight"]) == {"0.0", "0.25", "0.5", "0.75"}


@pytest.fixture
def head_run(tmp_path, tiny_dataset, tiny_split, tiny_chat_tokenizer, tiny_llama):
    """A run with the item head (decoded at weight 1), its split and a tasks build (no request among its rows)."""
    import datasets

    from tests.inference.test_item_head_override import _head_run, _set_head

    _head_run(tmp_path / "run", tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    _set_head(tmp_path / "run", 1.0)
    tiny_split.save(tmp_path / "split")
    train = datasets.Dataset.from_dict({"prompt": ["A user is searching for: pipette. Recommend an item."],
                                        "completion": ["<a_0>"], "task": ["query2item"]})
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "tasks"))
    return tmp_path


def _planted_requests(split, folder):
    """Request rows whose target is not in the history; the retriever's vector of each request is its target's."""
    rows = [{"request_id": f"{part}-{e['user_id']}", "part": part, "user_id": e["user_id"],
             "history": list(e["history"]), "target": e["target"], "request": f"need number {n}"}
            for part in ("valid", "test") for n, e in enumerate(split.eval_examples(part))
            if e["target"] not in e["history"]]
    write_requests(rows, folder / "r.jsonl")
    items = split.dataset.item_ids()
    vectors = np.random.default_rng(4).normal(size=(len(items), 32))
    retriever = TextRetriever(items, vectors, {r["request_id"]: vectors[items.index(r["target"])] for r in rows})
    return rows, retriever


@pytest.mark.parametrize("task", ["request", "request_history"])
def test_request_prior_row_reads_the_request_vector_in_the_item_head_and_its_weight_is_chosen_on_valid(
        head_run, tiny_split, monkeypatch, task):
    """Each request's vector is its target's: the prior puts every target first (Recall@1 = 1), which the run alone
    does not; the weight is the valid requests' best of the grid (ties: the smaller), recorded with its table."""
    import inference.requests as requests_module

    rows, retriever = _planted_requests(tiny_split, head_run)
    monkeypatch.setattr(requests_module, "minilm_retriever", lambda split, rows, encoder_dir="": retriever)
    out = head_run / f"eval_{task}"
    assert main(["evaluate", "--model_dir", str(head_run / "run"), "--split_dir", str(head_run / "split"),
                 "--out_dir", str(out), "--ks", "1", "5", "--num_beams", "8", "--task", task, "--part", "test",
                 "--requests_file", str(head_run / "r.jsonl"), "--tasks_dir", str(head_run / "tasks"),
                 "--request_prior_weights", "0.001", "500"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["recommenders"]) == {"alignrec", "alignrec + request prior", "minilm retriever", "popularity"}
    prior = data["request_prior"]
    # the tiny random model's scores are tied to ~1e-6, so even 0.001 puts every target first: a tie, the smaller wins
    assert prior == {"weight": 0.001, "valid_ndcg@10_by_weight": {"0.001": 1.0, "500.0": 1.0}}
    n_test = sum(r["part"] == "test" for r in rows)
    with_prior = data["recommenders"]["alignrec + request prior"]
    assert with_prior["n_examples"] == n_test and with_prior["overall"]["recall@1"] == 1.0
    assert data["recommenders"]["alignrec"]["overall"]["recall@1"] < 1.0


def test_request_prior_is_refused_in_one_line_without_an_item_head_or_for_next_item(head_run, capsys):
    from tests.inference.test_item_head_override import _set_head

    _set_head(head_run / "run", None)
    args = ["evaluate", "--model_dir", str(head_run / "run"), "--split_dir", str(head_run / "split"),
            "--out_dir", str(head_run / "eval"), "--requests_file", str(head_run / "r.jsonl"),
            "--tasks_dir", str(head_run / "tasks"), "--request_prior_weights", "10"]
    write_requests(ROWS, head_run / "r.jsonl")
    assert main([*args, "--task", "request"]) != 0
    err = capsys.readouterr().err
    assert "trained without an item head" in err and len(err.strip().splitlines()) == 1
    assert not (head_run / "eval").exists()  # refused before the folder is claimed
    assert main([*args, "--task", "next_item"]) != 0
    assert "request_prior_weights is a request task option" in capsys.readouterr().err
