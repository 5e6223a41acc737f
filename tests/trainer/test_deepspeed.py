"""DeepSpeed end to end on CPU (gloo): the launcher, plain python with --deepspeed, and each ds_configs file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import REPO_ROOT, logged

ENTRY = str(Path(REPO_ROOT) / "trainer" / "sft.py")


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc


def _check_run(run: Path, steps: int) -> None:
    assert sorted(logged(run, "loss")) == list(range(1, steps + 1))
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["kind"] == "adapter" and (run / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2.json", "zero3.json", "zero2_offload.json"])
def test_deepspeed_launcher_cpu(base_argv, tmp_path, config):
    deepspeed = str(Path(sys.executable).with_name("deepspeed"))
    ds_config = str(Path(REPO_ROOT) / "ds_configs" / config)
    # peft's ZeRO-3 path for trainable-token rows is CUDA-only; on CPU ZeRO-3 trains them as modules_to_save
    rows = ["--new_rows_training", "modules_to_save"] if config == "zero3.json" else []
    _run([deepspeed, "--num_gpus", "1", ENTRY, *base_argv, *rows, "--max_steps", "3", "--deepspeed", ds_config],
         tmp_path)
    _check_run(tmp_path / "run", 3)


@pytest.mark.slow
def test_plain_python_with_deepspeed_sets_single_process_env(base_argv, tmp_path):
    ds_config = str(Path(REPO_ROOT) / "ds_configs" / "zero2.json")
    _run([sys.executable, ENTRY, *base_argv, "--max_steps", "2", "--deepspeed", ds_config, "--local_rank=0"], tmp_path)
    _check_run(tmp_path / "run", 2)
