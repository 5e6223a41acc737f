"""``scripts/gpu_check.sh --dry_run``: the GPU check end to end on CPU (tiny model, a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    assert [r["batch_size"] for r in result["decode"]] == [4, 8]
    assert all(r["users"] == 8 and r["users_per_s"] > 0 for r in result["decode"])
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    for heading in ("## Quality", "## Training", "## Decoding"):
        assert heading in report and heading in done.stdout
    assert (tmp_path / "out" / "model" / "adapter_model.safetensors").is_file()
