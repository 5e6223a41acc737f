"""``scripts/gpu_check.sh --dry_run``: the GPU check end to end on CPU (tiny model, a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from recdata.config import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The recipe's switches the dry run must keep (it changes only assets, sizes, budget and devices).
TRAIN_SWITCHES = ("finetune_mode", "new_rows_init", "item_head_weight", "completion_only_loss", "packing", "packed_rows",
                  "metric_for_best_model", "load_best_model_at_end", "learning_rate", "code_rows_learning_rate")


def test_dry_run_prepares_transfers_trains_evaluates_and_benchmarks(tmp_path):
    # an empty ALIGNREC_HOME: the dry run needs neither SmolLM2 nor MiniLM nor any other installed asset
    env = {**os.environ, "PYTHON": sys.executable, "ALIGNREC_HOME": str(tmp_path / "empty_home")}
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--dry_run", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=1800)  # a hang guard only
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "gpu_carry" / "manifest.json").read_text())
    assert len(manifest["chunks"]) >= 2  # reassembly of several chunks ran
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["dry_run"] is True
    quality = result["quality"]
    assert set(quality) == {"alignrec", "sasrec", "popularity"}
    assert {q["n"] for q in quality.values()} == {16}
    for row in quality.values():
        assert 0.0 <= row["recall@1"] <= row["recall@5"] <= row["recall@10"] <= 1.0
    train = result["train"]
    assert train["steps"] == 4 and train["tokens_per_s"] > 0 and train["launcher"] == "python"
    assert [r["step"] for r in train["ranking_validation"]] == [2, 4]  # checkpoints chosen by ranking validation
    _assert_recipe_code_paths(tmp_path)
    assert [r["batch_size"] for r in result["decode"]] == [4, 8]
    assert all(r["users"] == 8 and r["users_per_s"] > 0 for r in result["decode"])
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    for heading in ("## Quality", "## Training", "## Decoding"):
        assert heading in report and heading in done.stdout
    assert (tmp_path / "out" / "model" / "adapter_model.safetensors").is_file()


def _assert_recipe_code_paths(work: Path) -> None:
    """The dry run trained what configs/gpu_check.yaml trains: fused vectors, one RQ level + the item-id level, the
    item head, code rows from the carried item vectors, packed rows, codes prompts; SASRec and the vectors carried."""
    shipped = load_yaml(REPO_ROOT / "configs" / "gpu_check.yaml")
    ran = yaml.safe_load((work / "out" / "train_config.yaml").read_text())
    assert {k: ran.get(k) for k in TRAIN_SWITCHES} == {k: shipped["train"][k] for k in TRAIN_SWITCHES}
    assert ran["ranking_eval_users"] > 0 and ran["item_vectors_dir"].endswith("prepared/item_vectors")
    prepared = work / "gpu_carry" / "work" / "prepared"
    tokenizer = json.loads((prepared / "item_tokenizer" / "config.json").read_text())
    assert len(tokenizer["codebook_sizes"]) == shipped["tokenizer"]["num_levels"] + 1  # + the item-id level
    assert tokenizer["codebook_sizes"][-1] == 30  # one id token per item
    assert tokenizer["meta"]["embeddings"]["kind"] == shipped["embeddings"]["source"] == "fused"
    manifest = json.loads((prepared / "tasks" / "tasks_manifest.json").read_text())
    assert manifest["prompt_format"] == shipped["tasks"]["prompt_format"]
    built = json.loads((prepared / "tasks" / "resolved_config.json").read_text())["TaskConfig"]
    assert json.loads(built["weights"]) == json.loads(shipped["tasks"]["weights"])  # language tasks beside seqrec_full
    assert (prepared / "sasrec" / "sasrec_config.json").is_file() and (prepared / "item_vectors" / "vectors.npy").is_file()
    assert not (prepared / "tasks" / "preference").exists()  # DPO pairs stay behind: SFT never reads them
