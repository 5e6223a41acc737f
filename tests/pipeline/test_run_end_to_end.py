"""``alignrec run`` end to end on a tiny random Llama and a tiny LC-Rec dataset: every artefact, skip, rerun."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import yaml

from alignrec.cli import main as alignrec_main
from tests.conftest import build_tiny_llama

NUM_ITEMS = 24
NUM_USERS = 40


def _write_lcrec(folder) -> None:
    """Users walk the catalogue in strides, so next-item prediction has a learnable pattern."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    items = {str(i): {"title": f"Item {i} lab kit", "description": f"kit number {i}", "brand": f"B{i % 3}",
                      "categories": f"Lab,Kits,K{i % 4}"} for i in range(NUM_ITEMS)}
    inter = {}
    for u in range(NUM_USERS):
        start, stride, length = int(rng.integers(NUM_ITEMS)), 1 + u % 3, 5 + u % 4
        inter[str(u)] = [(start + stride * j) % NUM_ITEMS for j in range(length)]
    (folder / "Tiny.item.json").write_text(json.dumps(items))
    (folder / "Tiny.inter.json").write_text(json.dumps(inter))


def _run_config(tmp_path, model_dir) -> dict:
    return {
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "data": {"path": str(tmp_path / "data"), "format": "lcrec_json", "max_history": 10},
        "embeddings": {"source": "cf", "sasrec_dim": 16, "sasrec_heads": 1, "sasrec_layers": 1, "sasrec_epochs": 3,
                       "sasrec_patience": 3, "llm_dir": str(model_dir), "cache_dir": str(tmp_path / "emb_cache")},
        "tokenizer": {"num_levels": 2, "codebook_size": 8, "rq_epochs": 30, "align_weight": 0.5,
                      "hidden_dims": [32], "latent_dim": 16},
        "tasks": {"max_history": 10, "stats_sample": 0},
        "train": {"launcher": "python", "model_name_or_path": str(model_dir), "finetune_mode": "lora",
                  "max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 2,
                  "eval_strategy": "steps", "eval_steps": 3, "save_strategy": "no", "max_length": 256,
                  "report_to": "none", "tensorboard": False},
        "evaluate": {"ks": [1, 5], "num_beams": 6, "batch_size": 8},
        "cache": {"k": 5, "batch_size": 8, "chunk_size": 16},
        "export": {},
    }


def tiny_run_config(tmp_path, tokenizer) -> dict:
    """Tiny LC-Rec data and a saved tiny Llama (with ``tokenizer``) under ``tmp_path``, and a run config over them."""
    _write_lcrec(tmp_path / "data")
    model_dir = tmp_path / "tiny-llama"
    build_tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return _run_config(tmp_path, model_dir)


@pytest.fixture
def tiny_run(tmp_path, tiny_chat_tokenizer):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config, tmp_path / "runs" / "tiny"


def _report_statuses(run_dir) -> dict[str, str]:
    """{stage: 'ran' | 'skipped'} from the Stages table of report.md."""
    section = (run_dir / "report.md").read_text().split("## Stages", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")][1:]
    return {row[0]: row[1] for row in rows}


def _stage_status(run_dir) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["key"] for p in run_dir.glob("*/stage.json")}


def test_run_writes_every_artefact_then_skips(tiny_run):
    config_path, config, run_dir = tiny_run
    assert alignrec_main(["run", "--config", str(config_path)]) == 0

    # data
    stats = json.loads((run_dir / "data" / "split" / "stats.json").read_text())
    assert (stats["users"], stats["items"]) == (NUM_USERS, NUM_ITEMS)
    # tokenizer: one-to-one codes for every item
    from tokenization import ItemTokenizer

    item_tok = ItemTokenizer.from_pretrained(run_dir / "tokenizer" / "item_tokenizer")
    assert sorted(item_tok.item_ids, key=int) == [str(i) for i in range(NUM_ITEMS)]
    assert len({tuple(c) for c in item_tok.codes.tolist()}) == NUM_ITEMS
    # training lowered the loss and wrote the run folder
    train = json.loads((run_dir / "train" / "stage.json").read_text())["summary"]
    assert train["last_loss"] < train["first_loss"]
    assert (run_dir / "train" / "model" / "item_tokenizer").is_dir()
    # evaluation: our model, SASRec and popularity, no invalid output
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    assert set(metrics) == {"alignrec", "sasrec", "popularity"}
    assert metrics["alignrec"]["invalid_rate"] == 0.0
    assert metrics["alignrec"]["n_examples"] == NUM_USERS
    # cache: every user has exactly k real catalogue items
    store = run_dir / "cache" / "store"
    from inference.cache import CacheReader

    with CacheReader(store) as reader:
        for user in range(NUM_USERS):
            result = reader.get(str(user))
            assert not result.fallback
            ids = [item for item, _ in result.items]
            assert len(ids) == 5 and set(ids) <= set(item_tok.item_ids)
    assert sqlite3.connect(next((store / "versions").glob("*.sqlite"))).execute("pragma journal_mode").fetchone()[0] == "wal"
    # export validates
    from tokenization.vocab_export import validate_vocab

    validate_vocab(run_dir / "export" / "vocab", expected_item_ids=item_tok.item_ids)
    report = (run_dir / "report.md").read_text()
    for heading in ("## Dataset", "## Item tokenizer", "## Training", "## Quality", "## Throughput", "## Artefacts"):
        assert heading in report

    keys = _stage_status(run_dir)
    assert alignrec_main(["run", "--config", str(config_path)]) == 0
    assert _stage_status(run_dir) == keys
    statuses = _report_statuses(run_dir)
    assert statuses.pop("preference") == "off" and set(statuses.values()) == {"skipped"}  # optional, off by default

    # A changed tokenizer config re-runs the tokenizer and every later stage, and nothing before it.
    config["tokenizer"]["rq_epochs"] = 31
    config_path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(config_path)]) == 0
    after = _stage_status(run_dir)
    assert {s for s in after if after[s] == keys[s]} == {"data", "knowledge", "embeddings"}
    assert _report_statuses(run_dir) == {"data": "skipped", "knowledge": "skipped", "embeddings": "skipped", "tokenizer": "ran", "tasks": "ran",
                        "train": "ran", "preference": "off", "evaluate": "ran", "cache": "ran", "export": "ran"}
