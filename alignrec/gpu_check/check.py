"""GPU side of the check: install the carried wheels, convert the GGUF, then SmolLM2 LoRA (the recipe's train
section: bf16, through ``deepspeed`` when it imports, else plain ``python``; code rows started at the carried item
vectors; ranking validation picks the checkpoint) -> evaluation on a seeded sample of test users (ours, the SASRec
trained in ``prepare``, popularity; same split, ``exclude_history``) -> decode benchmark. Prints the quality table,
training tokens/s and decode users/s, and writes ``gpu_check.json`` + ``gpu_check.md``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from alignrec.gpu_check.bundle import assemble, chunk_status
from recdata.errors import UserError

__all__ = ["decode_benchmark", "device_report", "install_wheels", "run_check"]

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
CARRY_ONLY_KEYS = ("launcher", "num_gpus", "deepspeed")  # pipeline-level keys of the train section


def device_report() -> dict[str, Any]:
    """Python, GPU and which of the packages the check needs are importable (first thing every call prints)."""
    report: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            report["gpu"] = torch.cuda.get_device_name(0)
            report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        report["torch"] = None
    for name in ("transformers", "peft", "accelerate", "trl", "datasets", "pyarrow", "pandas", "gguf", "deepspeed"):
        try:
            report[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report[name] = None
    return report


def install_wheels(wheel_dir: Path, site: Path) -> list[str]:
    """``pip install --no-deps --no-index --target site`` the carried wheels whose package is missing here.

    Nothing already installed is touched (no deps resolution, so torch can never be replaced); ``site`` is put
    on ``sys.path`` and ``PYTHONPATH`` (and its ``bin`` on ``PATH``, for the ``deepspeed`` launcher).
    """
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    missing = []
    for wheel in wheels:
        dist = wheel.name.split("-")[0]
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            missing.append(wheel)
    done = site / ".installed"
    names = sorted(w.name for w in missing)
    if missing and not (done.is_file() and done.read_text().split() == names):
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site),
               "--quiet", *map(str, missing)]
        logger.info("installing %d wheel(s) into %s", len(missing), site)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise UserError(f"pip install of the carried wheels failed: {result.stderr.strip()[-600:]}")
        done.write_text("\n".join(names) + "\n")
    if site.is_dir():
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        os.environ["PATH"] = os.pathsep.join([str(site / "bin"), os.environ.get("PATH", "")])
        importlib.invalidate_caches()
    return names


def convert_gguf(gguf: Path, target: Path) -> Path:
    """GGUF -> HF folder (dequantised, as ``make setup`` does); reused when already converted."""
    if (target / ".complete").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True), dtype="float32")
    model.save_pretrained(target)
    tok.save_pretrained(target)
    (target / ".complete").write_text(gguf.name + "\n")
    return target


def _train(cfg: dict[str, Any], prepared: Path, model_dir: Path, out: Path, device: str) -> dict[str, Any]:
    import yaml

    from alignrec.gpu_check.prepare import ITEM_VECTORS
    from trainer.callbacks import read_metrics
    from trainer.cli import build_command
    from trainer.row_init import section_row_init

    section = {k: v for k, v in cfg["train"].items() if k not in CARRY_ONLY_KEYS}
    section.update(model_name_or_path=str(model_dir), dataset_dir=str(prepared / "tasks"),
                   item_tokenizer_dir=str(prepared / "item_tokenizer"), output_dir=str(out / "model"))
    if section_row_init(section) == "item_vectors" or section.get("content_rows", "none") != "none":
        section["item_vectors_dir"] = str(prepared / ITEM_VECTORS)  # as the pipeline's train stage injects them
    config_file = out / "train_config.yaml"
    config_file.write_text(yaml.safe_dump(section, sort_keys=True))
    launcher = cfg["train"].get("launcher", "deepspeed")
    if launcher == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        logger.warning("deepspeed is not importable: training with the plain python launcher")
        launcher = "python"
    args = ["--config", str(config_file)]
    if launcher == "deepspeed" and cfg["train"].get("deepspeed"):
        args += ["--deepspeed", str(REPO_ROOT / cfg["train"]["deepspeed"])]
    attempts = []
    for attempt in ([launcher, "python"] if launcher != "python" else ["python"]):
        run_args = args if attempt == "deepspeed" else [a for a in args if "ds_configs" not in a and a != "--deepspeed"]
        cmd = build_command(attempt, int(cfg["train"].get("num_gpus", 1) or 1), run_args)
        logger.info("training: %s", " ".join(cmd))
        started = time.time()
        code = subprocess.call(cmd, cwd=str(REPO_ROOT), env={**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))})
        attempts.append({"launcher": attempt, "exit": code, "seconds": round(time.time() - started, 1)})
        if code == 0:
            break
        logger.warning("training with %s exited with %d%s", attempt, code, "; retrying with python" if attempt != "python" else "")
    else:
        raise UserError(f"training failed with every launcher: {attempts}")
    rows = read_metrics(out / "model" / "metrics.jsonl")
    end = next((r for r in reversed(rows) if "train_loss" in r), {})
    runtime, steps, epochs = end.get("train_runtime"), end.get("step"), end.get("epoch")
    padded = max((r.get("num_input_tokens_seen", 0) for r in rows), default=0)  # HF counts padding too
    stats = json.loads((prepared / "tasks" / "stats.json").read_text())["train"]["total"]
    mean_tokens = stats["prompt_tokens"]["mean"] + stats["completion_tokens"]["mean"]
    # examples seen = epochs done x training rows: right with packing too, where a batch row holds many examples
    examples = epochs * stats["count"] if epochs else 0
    losses = [r["loss"] for r in rows if "loss" in r]
    ranking = [r for r in rows if "eval_ranking_ndcg@10" in r]
    return {"attempts": attempts, "launcher": attempts[-1]["launcher"], "steps": steps, "epochs": epochs,
            "train_runtime_s": runtime, "samples_per_s": examples / runtime if runtime else None,
            "tokens_per_s": examples * mean_tokens / runtime if runtime else None,  # non-padding, from task stats
            "padded_tokens_per_s": padded / runtime if runtime and padded else None,
            "mean_tokens_per_example": mean_tokens, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "ranking_validation": [{"step": r["step"], "ndcg@10": r["eval_ranking_ndcg@10"],
                                    "recall@10": r.get("eval_ranking_recall@10")} for r in ranking],
            "device": device}


def decode_benchmark(model, hf_tokenizer, item_tokenizer, histories: list[list[str]], batch_sizes: list[int],
                     num_beams: int, k: int, prompt_format: str = "chat") -> list[dict[str, Any]]:
    """Users/s of ``llm_recommender`` (prompt build + trie beam search + exclusion) at each batch size, with the
    run's prompts (``prompt_format``: ``trainer.read_prompt_format``)."""
    import torch

    from inference.recommender import llm_recommender

    rows = []
    for batch in batch_sizes:
        fn = llm_recommender(model, hf_tokenizer, item_tokenizer, k, num_beams, True, batch, prompt_format=prompt_format)
        fn(["warm"] * min(batch, len(histories)), histories[:batch])  # warm-up: kernels, allocator, trie
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn([str(i) for i in range(len(histories))], histories)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        rows.append({"batch_size": batch, "users": len(histories), "num_beams": num_beams, "seconds": round(seconds, 3),
                     "users_per_s": round(len(histories) / seconds, 1)})
    return rows


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _markdown(result: dict[str, Any], quality_md: str) -> str:
    t = result["train"]
    epochs = "-" if t["epochs"] is None else f"{t['epochs']:.2f}"
    lines = ["# GPU check", "", f"Device: {result['device'].get('gpu', 'cpu')}; python {result['device']['python']}; "
             f"torch {result['device'].get('torch')}; dry run: {result['dry_run']}", "", "## Quality", "", quality_md, "",
             "## Training", "", "| launcher | steps | epochs | seconds | examples/s | tokens/s | tokens/s incl. padding "
             "| first loss | last loss |", "|---|---|---|---|---|---|---|---|---|",
             f"| {t['launcher']} | {t['steps']} | {epochs} | {t['train_runtime_s']} | {_r(t['samples_per_s'])} | "
             f"{_r(t['tokens_per_s'])} | {_r(t['padded_tokens_per_s'])} | {t['first_loss']} | {t['last_loss']} |", "",
             "Ranking validation (valid users; the best step is the evaluated model): " + (", ".join(
                 f"step {r['step']}: NDCG@10 {r['ndcg@10']:.4f}" for r in t["ranking_validation"]) or "none"), "",
             "## Decoding", "", "| batch | users | beams | seconds | users/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['users']} | {r['num_beams']} | {r['seconds']} | {r['users_per_s']} |"
              for r in result["decode"]]
    lines += ["", f"Stage seconds: {json.dumps(result['seconds'])}"]
    return "\n".join(lines) + "\n"


def run_check(carry_dir: Path, out: Path) -> dict[str, Any] | None:
    """Everything after the transfer; None (and a status line) while chunks are still missing."""
    dev = device_report()
    logger.info("device: %s", json.dumps(dev))
    unpacked = carry_dir / "unpacked"
    if not assemble(carry_dir, unpacked):
        status = chunk_status(carry_dir)
        logger.warning("bundle incomplete: %s; send the missing chunk folders (with manifest.json)", status)
        return None
    seconds: dict[str, float] = {}
    started = time.time()
    installed = install_wheels(unpacked / "wheels", carry_dir / "site")
    import tarfile

    with tarfile.open(unpacked / "prepared.tar.gz") as tar:
        tar.extractall(carry_dir / "work", filter="data")
    prepared = carry_dir / "work" / "prepared"
    cfg = json.loads((prepared / "check_config.json").read_text())
    gguf = next((unpacked / "model").glob("*.gguf"), None)
    model_dir = convert_gguf(gguf, carry_dir / "work" / "smollm2") if gguf else unpacked / "model"
    if not (model_dir / "config.json").is_file():
        raise UserError(f"no model in the bundle ({unpacked / 'model'}); re-run prepare without --no_weights")
    seconds["setup"] = round(time.time() - started, 1)
    from alignrec.gpu_check.prepare import tokenizer_fingerprint

    if tokenizer_fingerprint(str(model_dir)) != cfg["info"]["tokenizer"]:
        raise UserError("the converted model's tokenizer differs from the one the tasks were built with; "
                        "re-run prepare with the same SmolLM2 GGUF")
    import torch

    device = cfg["check"].get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    from alignrec.recommenders import SASRec
    from recdata import SplitDataset

    split = SplitDataset.load(prepared / "split")
    sasrec = SASRec.from_pretrained(prepared / "sasrec", device=device)  # trained in prepare (the embeddings stage)
    t0 = time.time()
    train = _train(cfg, prepared, model_dir, out, device)
    seconds["train"] = round(time.time() - t0, 1)

    from inference.cli import EvaluateConfig, run_evaluate
    from recdata.evaluation import render_markdown

    ev = EvaluateConfig(model_dir=str(out / "model"), split_dir=str(prepared / "split"), out_dir=str(out / "evaluate"),
                        **{k: v for k, v in cfg["evaluate"].items() if k != "device"}, device=device)
    exclude = ev.exclude_history

    def sasrec_fn(user_ids, histories):
        return sasrec.recommend(histories, k=max(ev.ks), exclude_history=exclude)

    t0 = time.time()
    reports = run_evaluate(ev, extra_recommenders={"sasrec": sasrec_fn})
    seconds["evaluate"] = round(time.time() - t0, 1)

    from trainer import load_for_inference, read_prompt_format

    model, hf_tok, item_tok = load_for_inference(out / "model", device=device)
    users = int(cfg["check"].get("decode_users", 1024))
    histories = [list(h) for h in split.eval_examples("test")["history"][:users]]
    t0 = time.time()
    decode = decode_benchmark(model, hf_tok, item_tok, histories, list(cfg["check"]["decode_batch_sizes"]),
                              ev.num_beams, max(ev.ks), read_prompt_format(out / "model"))
    seconds["decode"] = round(time.time() - t0, 1)
    seconds["total"] = round(time.time() - started, 1)
    result = {"device": dev, "dry_run": cfg["info"]["dry_run"], "installed_wheels": installed, "train": train,
              "quality": {name: {"n": r["n_examples"], **r["overall"], "users_per_s": r["timing"]["users_per_second"]}
                          for name, r in reports.items()},
              "decode": decode, "seconds": seconds}
    from recdata.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "gpu_check.json", result)
    md = _markdown(result, render_markdown(reports, title=f"test, {reports['alignrec']['n_examples']} users"))
    atomic_write_text(out / "gpu_check.md", md)
    print(md, flush=True)
    return result
