"""Training throughput. Two modes; each variant runs in its own subprocess (peak RSS is its own), after
``--warmup`` steps; prints a table, writes JSON.

``--mode synthetic`` (default): our trainer (trainer.run_sft) vs a plain transformers.Trainer + peft loop, both LoRA
(all attention + MLP projections, code-token rows via trainable_token_indices) on the same synthetic rows, batch
size, seed and steps. Tokens/s counts non-padding tokens.

``--mode demo``: the demo's real task rows (ML-100K through the repo's loaders, the ``--config`` data / tasks /
train sections) in before/after variants (``DEMO_VARIANTS``: prompt format, whole-sequence rows, packing), all
through ``run_sft`` on the same machine in one run. Reports tokens/s (non-padding) and supervised next-item
targets/s (items whose every code token carries loss, ``trainer.item_targets``), and the steps each variant
needs to train as long as the ``before`` one does in the config's ``max_steps``. Without ``--item_tokenizer_dir``
the items get a stand-in code of the config's shape (one cluster level + the item-id level: 2 tokens per item);
throughput does not depend on which cluster an item is in. Not timed: DeepSpeed (run in-process, no launcher) and
the item-vector row start (``mean`` instead: a one-off cost). ``--set VARIANT.SECTION.KEY=VALUE`` (VARIANT may be
``*``, SECTION ``tasks`` or ``train``) changes a variant, e.g. ``--set after.train.per_device_train_batch_size=4``.

    .venv/bin/python scripts/bench_train.py --steps 12 --out bench_train.json        # SmolLM2 (default LLM)
    .venv/bin/python scripts/bench_train.py --model_dir PATH --steps 20                # any local HF folder
    .venv/bin/python scripts/bench_train.py --mode demo --steps 12 --repeats 2 \
        --variants before,plain,codes,full,after,after_flat --out bench_results/bench_train_demo.json

Over 400 lines because it holds two benchmarks of the same trainer (synthetic rows vs a plain Trainer, and the
demo's real rows before/after) that share the subprocess runner and the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("bench_train")


def make_data(work: Path, model_dir: Path, n_rows: int, history: int) -> tuple[Path, Path]:
    """Synthetic seqrec rows over a random 4-level x 256 code grid (throughput does not depend on content)."""
    import datasets
    import numpy as np
    from transformers import AutoTokenizer

    from tokenization import ItemTokenizer

    rng = np.random.default_rng(0)
    n_items = 2000
    codes = np.stack([rng.permutation(256 * 256 * 16)[:n_items] // (256 * 16), rng.integers(0, 256, n_items),
                      rng.integers(0, 256, n_items), np.arange(n_items) % 256], axis=1)
    itok = ItemTokenizer.from_codes([f"i{i}" for i in range(n_items)], codes, [256, 256, 256, 256])
    itok.save_pretrained(work / "item_tokenizer")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = {"prompt": [], "completion": [], "task": []}
    for _ in range(n_rows):
        items = [f"i{i}" for i in rng.integers(0, n_items, history + 1)]
        text = "The user bought, in order: " + ", ".join(itok.item_to_string(i) for i in items[:-1]) + ". What next?"
        msgs = [{"role": "user", "content": text}]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) if tok.chat_template else text
        rows["prompt"].append(prompt)
        rows["completion"].append(itok.item_to_string(items[-1]))
        rows["task"].append("seqrec")
    ds = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(8))}).save_to_disk(str(work / "tasks"))
    return work / "tasks", work / "item_tokenizer"


class Timer:
    """TrainerCallback: time and non-padding tokens between the end of step ``warmup`` and the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.tok0, self.result = warmup, None, 0, {}

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == outer.warmup:
                    outer.t0, outer.tok0 = time.perf_counter(), state.num_input_tokens_seen
                if state.global_step == state.max_steps:
                    dt = time.perf_counter() - outer.t0
                    tokens = state.num_input_tokens_seen - outer.tok0
                    outer.result = {"seconds": dt, "tokens": int(tokens), "tokens_per_s": tokens / dt,
                                    "steps": state.max_steps - outer.warmup}

        return _CB()


def common_args(a) -> dict:
    return dict(per_device_train_batch_size=a.batch_size, learning_rate=1e-4, lr_scheduler_type="constant",
                max_steps=a.steps, seed=0, data_seed=0, logging_steps=1, save_strategy="no", report_to=[],
                bf16=False, use_cpu=True, dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
                gradient_checkpointing=False, warmup_steps=0, disable_tqdm=True)


def run_ours(a, data: Path, itok_dir: Path, out: Path) -> dict:
    from trl import SFTConfig

    from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments
    from trainer.train import run_sft

    timer = Timer(a.warmup)
    sft = SFTConfig(output_dir=str(out), max_length=a.max_length, **common_args(a))
    run_sft(ModelArguments(model_name_or_path=str(a.model_dir), lora_dropout=0.0),
            DataArguments(dataset_dir=str(data), item_tokenizer_dir=str(itok_dir)),
            AlignRecTrainArguments(tensorboard=False, loss_curve=False, precision="fp32"), sft,
            extra_callbacks=[timer.callback()])
    return timer.result


def run_plain(a, data: Path, itok_dir: Path, out: Path) -> dict:
    """The loop a user would write by hand: tokenize, mask the prompt, pad, peft LoRA, transformers.Trainer."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from tokenization import ItemTokenizer
    from trainer.config import DEFAULT_LORA_TARGETS

    tok = AutoTokenizer.from_pretrained(a.model_dir)
    itok = ItemTokenizer.from_pretrained(itok_dir)
    ids = itok.add_to_tokenizer(tok)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=DEFAULT_LORA_TARGETS,
                                             task_type="CAUSAL_LM", trainable_token_indices={"embed_tokens": ids}))

    def encode(row):
        p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        input_ids = (p + c)[: a.max_length]
        return {"input_ids": input_ids, "labels": ([-100] * len(p) + c)[: a.max_length]}

    train = datasets.load_from_disk(str(data))["train"].map(encode, remove_columns=["prompt", "completion", "task"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def collate(rows):
        n = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), n), pad)
        labels = torch.full((len(rows), n), -100)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            input_ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}

    timer = Timer(a.warmup)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(out), **common_args(a)),
                      train_dataset=train, data_collator=collate, callbacks=[timer.callback()])
    trainer.train()
    return timer.result


# ---- demo mode: the demo's real task rows, before / after ------------------------------------------------------
# name -> (what it changes, tasks overrides, train overrides); every variant starts from the --config sections.
FULL_TASKS = {"prompt_format": "codes", "weights": {"seqrec_full": 1.0}, "mixture_size": 0}
DEMO_VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "before": ("the config as it is", {}, {}),
    "plain": ("no chat template, no system text", {"prompt_format": "plain"}, {}),
    "codes": ("BOS + codes only, seqrec windows", {"prompt_format": "codes"}, {}),
    "full": ("codes, whole-sequence rows, completion-only", FULL_TASKS, {"completion_only_loss": True}),
    "after": ("full + bfd packing, packed rows", FULL_TASKS,
              {"completion_only_loss": True, "packing": True, "packed_rows": True}),
    "after_flat": ("full + bfd packing, TRL flat batch", FULL_TASKS, {"completion_only_loss": True, "packing": True}),
    "after_long": ("after, 51-item windows in 4 x 512-token rows", {**FULL_TASKS, "max_history": 50},
                   {"completion_only_loss": True, "packing": True, "packed_rows": True, "max_length": 512,
                    "per_device_train_batch_size": 4}),
}
PIPELINE_ONLY_TRAIN_KEYS = ("launcher", "num_gpus", "deepspeed")  # the pipeline's launcher settings


def load_demo_config(path: str) -> dict:
    import yaml

    from recdata.paths import alignrec_home

    os.environ.setdefault("ALIGNREC_HOME", str(alignrec_home()))
    return yaml.safe_load(os.path.expandvars(Path(path).read_text(encoding="utf-8")))


def parse_sets(items: list[str], variants: list[str]) -> dict[str, dict[str, dict]]:
    """``--set VARIANT.SECTION.KEY=VALUE`` -> {variant: {section: {key: value}}} (values parsed as YAML)."""
    import yaml

    out: dict[str, dict[str, dict]] = {v: {"tasks": {}, "train": {}} for v in variants}
    for item in items:
        target, sep, value = item.partition("=")
        parts = target.split(".")
        if not sep or len(parts) != 3 or parts[1] not in ("tasks", "train") or parts[0] not in (*variants, "*"):
            raise SystemExit(f"--set {item!r}: expected VARIANT.tasks|train.KEY=VALUE with VARIANT in {variants} or *")
        for v in variants if parts[0] == "*" else [parts[0]]:
            out[v][parts[1]][parts[2]] = yaml.safe_load(value)
    return out


def standin_item_tokenizer(item_ids: list[str], tokenizer_section: dict):
    """The config's code shape over the real catalogue: ``num_levels`` random cluster levels (+ the item-id level)."""
    import numpy as np

    from tokenization import ItemTokenizer
    from tokenization.config import auto_codebook_size

    n = len(item_ids)
    num_levels = int(tokenizer_section.get("num_levels", 4))
    size = int(tokenizer_section.get("codebook_size")
               or auto_codebook_size(n, num_levels if tokenizer_section.get("item_id_level") else 1))
    if tokenizer_section.get("item_id_level"):
        clusters = np.random.default_rng(0).integers(0, size, (n, num_levels))
        return ItemTokenizer.from_codes(item_ids, np.concatenate([clusters, np.arange(n)[:, None]], axis=1),
                                        [size] * num_levels + [n])
    if size ** num_levels < n:
        raise SystemExit(f"{num_levels} levels of {size} codes cannot give {n} items unique codes")
    index = np.random.default_rng(0).permutation(n)  # unique codes: the item's index in base `size`
    codes = np.stack([index // size ** (num_levels - 1 - j) % size for j in range(num_levels)], axis=1)
    return ItemTokenizer.from_codes(item_ids, codes, [size] * num_levels)


def row_token_stats(dataset, hf_tokenizer, sample: int = 300) -> dict:
    """Mean prompt / completion tokens of the first ``sample`` rows, as TRL tokenizes them (EOS on completions)."""
    rows = dataset.select(range(min(sample, len(dataset))))
    prompt = [len(hf_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in rows["prompt"]]
    total = [len(hf_tokenizer(p + c + hf_tokenizer.eos_token, add_special_tokens=False)["input_ids"])
             for p, c in zip(rows["prompt"], rows["completion"], strict=True)]
    return {"rows": len(dataset), "prompt_tokens": sum(prompt) / len(prompt),
            "completion_tokens": (sum(total) - sum(prompt)) / len(total), "row_tokens": sum(total) / len(total)}


def build_demo_tasks(a, work: Path, variants: list[str], sets: dict) -> dict[str, dict]:
    """One tasks build per distinct tasks section; returns {variant: {dataset_dir, token stats}}."""
    from recdata.prepare import DataConfig, prepare_dataset
    from sft_tasks import TaskConfig, build_tasks, save_task_build
    from tokenization import ItemTokenizer
    from trainer.config import ModelArguments
    from trainer.model_setup import load_tokenizer

    cfg = load_demo_config(a.config)
    split = prepare_dataset(DataConfig(**cfg["data"]))
    if a.item_tokenizer_dir:
        item_tokenizer = ItemTokenizer.from_pretrained(a.item_tokenizer_dir)
    else:
        item_tokenizer = standin_item_tokenizer(split.dataset.item_ids(), cfg.get("tokenizer", {}))
    item_tokenizer.save_pretrained(work / "item_tokenizer")
    hf_tokenizer = load_tokenizer(ModelArguments(model_name_or_path=a.model_dir))
    coded = load_tokenizer(ModelArguments(model_name_or_path=a.model_dir))
    item_tokenizer.add_to_tokenizer(coded)
    builds: dict[str, dict] = {}
    out: dict[str, dict] = {}
    for v in variants:
        section = {**cfg.get("tasks", {}), **DEMO_VARIANTS[v][1], **sets[v]["tasks"]}
        key = json.dumps(section, sort_keys=True)
        if key not in builds:
            tasks_cfg = TaskConfig(**{**section, "preference_negatives": 0})
            build = build_tasks(tasks_cfg, split, item_tokenizer, hf_tokenizer, with_preference=False)
            folder = save_task_build(build, work / f"tasks_{len(builds)}", stats={})
            builds[key] = {"dataset_dir": str(folder), "tasks": section,
                           **row_token_stats(build.datasets["train"], coded)}
        out[v] = builds[key]
    return out


def demo_train_config(a, v: str, section: dict, sets: dict, data: dict, work: Path, rows: int) -> dict:
    """The trainer YAML of variant ``v``: the config's train section, the variant's changes, the bench's settings."""
    body = {k: x for k, x in section.items() if k not in PIPELINE_ONLY_TRAIN_KEYS}
    if body.get("new_rows_init") == "item_vectors":
        body["new_rows_init"] = "mean"  # needs the embeddings stage's vectors; a one-off start, not per step
    return {**body, **DEMO_VARIANTS[v][2], **sets[v]["train"],
            "model_name_or_path": a.model_dir, "dataset_dir": data["dataset_dir"],
            "item_tokenizer_dir": str(work / "item_tokenizer"), "output_dir": str(work / f"out_{v}"),
            "overwrite": True, "max_steps": a.steps, "max_train_samples": rows, "eval_strategy": "no",
            "save_strategy": "no", "report_to": "none", "tensorboard": False, "loss_curve": False,
            "logging_steps": 1, "dataloader_num_workers": 0, "disable_tqdm": True, "lora_dropout": 0.0,
            "max_train_seconds": 0}


def real_tokens(inputs: dict) -> int:
    """Non-padding tokens of a batch: the attention mask's, else all but each row's right padding (position 0
    after the row's last example, ``trainer.packing``; TRL's flat batches have none)."""
    import torch

    if inputs.get("attention_mask") is not None:
        return int(inputs["attention_mask"].sum())
    pos = inputs["position_ids"]  # [B, T]
    nonzero = pos != 0
    last = torch.where(nonzero.any(1), pos.shape[1] - 1 - nonzero.flip(1).int().argmax(1), torch.zeros_like(pos[:, 0]))
    return int((last + 1).sum())


class TargetCounter:
    """TrainerCallback + forward pre-hook: time, tokens and supervised item targets after step ``warmup``."""

    def __init__(self, warmup: int, levels) -> None:
        self.warmup, self.levels = warmup, levels
        self.counting, self.t0 = False, 0.0
        self.totals = {"tokens": 0, "computed_tokens": 0, "loss_tokens": 0, "item_targets": 0}
        self.result: dict = {}

    def hook(self, module, args, kwargs):
        if not (self.counting and module.training and kwargs.get("labels") is not None):
            return
        from trainer.item_targets import count_item_targets, count_loss_tokens

        labels = kwargs["labels"]
        self.totals["tokens"] += real_tokens(kwargs)
        self.totals["computed_tokens"] += int(kwargs["input_ids"].numel())
        self.totals["loss_tokens"] += count_loss_tokens(labels)
        self.totals["item_targets"] += count_item_targets(labels.cpu(), self.levels)

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                model.register_forward_pre_hook(outer.hook, with_kwargs=True)

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == outer.warmup:
                    outer.counting, outer.t0 = True, time.perf_counter()
                if state.global_step == state.max_steps:
                    dt = time.perf_counter() - outer.t0
                    steps = state.max_steps - outer.warmup
                    t = outer.totals
                    outer.result = {**t, "seconds": dt, "steps": steps, "step_seconds": dt / steps,
                                    "tokens_per_s": t["tokens"] / dt, "targets_per_s": t["item_targets"] / dt,
                                    "targets_per_token": t["item_targets"] / max(t["tokens"], 1),
                                    "padding_share": 1 - t["tokens"] / max(t["computed_tokens"], 1)}

        return _CB()


def run_demo_variant(a, work: Path) -> dict:
    import yaml

    from tokenization import ItemTokenizer
    from trainer.config import parse_train_config
    from trainer.item_targets import CodeLevels
    from trainer.model_setup import load_tokenizer
    from trainer.train import run_sft

    config_file = work / f"train_{a.variant}.yaml"
    model_args, data_args, run_args, sft = parse_train_config(["--config", str(config_file)])
    tok = load_tokenizer(model_args)
    itok = ItemTokenizer.from_pretrained(data_args.item_tokenizer_dir)
    itok.add_to_tokenizer(tok)
    counter = TargetCounter(a.warmup, CodeLevels.from_token_ids(itok.item_token_ids(tok), len(tok)))
    run_sft(model_args, data_args, run_args, sft, extra_callbacks=[counter.callback()])
    return {**counter.result, "train_config": yaml.safe_load(config_file.read_text())}


def rows_needed(a, train: dict, stats: dict) -> int:
    """Task rows that fill ``steps + 1`` batches (packed rows hold ~max_length / row_tokens rows each)."""
    batches = int(train.get("per_device_train_batch_size", 8)) * (a.steps + 1)
    if not train.get("packing"):
        return batches
    per_row = max(1, int(int(train.get("max_length", 1024)) // max(stats["row_tokens"], 1)))
    return int(batches * per_row * 1.3) + 16


def main_demo(a) -> None:
    import yaml

    from recdata.io import atomic_write_json

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in DEMO_VARIANTS]
    if unknown or "before" not in variants:
        raise SystemExit(f"--variants must name 'before' and others of {list(DEMO_VARIANTS)}; unknown {unknown}")
    sets = parse_sets(a.set, variants)
    cfg = load_demo_config(a.config)
    with tempfile.TemporaryDirectory(prefix="bench_train_demo_") as tmp:
        work = Path(tmp)
        data = build_demo_tasks(a, work, variants, sets)
        for v in variants:
            train = {**cfg.get("train", {}), **DEMO_VARIANTS[v][2], **sets[v]["train"]}
            body = demo_train_config(a, v, cfg.get("train", {}), sets, data[v], work, rows_needed(a, train, data[v]))
            (work / f"train_{v}.yaml").write_text(yaml.safe_dump(body, sort_keys=True))
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(a.repeats):
            for v in variants:
                res = work / f"{v}.json"
                cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", v, "--work", str(work), "--result", str(res)]
                subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                runs[v].append(json.loads(res.read_text()))
    # variants of one round run back to back: per-round ratios to `before` cancel most drift of a shared machine
    ratio = {v: sorted(r["targets_per_s"] / b["targets_per_s"] for r, b in zip(runs[v], runs["before"], strict=True))
             for v in variants}
    med_ratio = {v: rs[len(rs) // 2] for v, rs in ratio.items()}
    med = {v: sorted(rs, key=lambda r: r["targets_per_s"])[len(rs) // 2] for v, rs in runs.items()}
    budget = float(cfg.get("train", {}).get("max_steps", a.steps)) * med["before"]["step_seconds"]
    print(f"\n{'variant':<11} {'row tok':>7} {'prompt':>6} {'tokens/s':>9} {'targets/s':>9} {'tgt/tok':>7} "
          f"{'pad %':>6} {'step s':>7} {'x before':>8} {'steps=time':>10}  what")
    for v in variants:
        m, d = med[v], data[v]
        print(f"{v:<11} {d['row_tokens']:>7.1f} {d['prompt_tokens']:>6.1f} {m['tokens_per_s']:>9.1f} "
              f"{m['targets_per_s']:>9.1f} {m['targets_per_token']:>7.3f} {100 * m['padding_share']:>6.1f} "
              f"{m['step_seconds']:>7.2f} {med_ratio[v]:>8.2f} {budget / m['step_seconds']:>10.0f}  {DEMO_VARIANTS[v][0]}")
    print(f"x before: median per-round ratio of supervised targets/s (goal >= 3 for 'after'); steps=time: max_steps "
          f"that train as long as 'before' does in {cfg.get('train', {}).get('max_steps')} steps ({budget:.0f} s)")
    atomic_write_json(a.out, {"mode": "demo", "config": {k: x for k, x in vars(a).items()
                                                           if k not in ("variant", "work", "result")},
                              "variants": {v: {"what": DEMO_VARIANTS[v][0], **{k: x for k, x in data[v].items()
                                                                                if k != "dataset_dir"}}
                                           for v in variants},
                              "runs": runs, "median_run": med, "round_ratios_targets_per_s": ratio,
                              "ratio_targets_per_s": med_ratio, "steps_for_equal_time": {
                                  v: budget / med[v]["step_seconds"] for v in variants}})


def child(a) -> None:
    work = Path(a.work)
    if a.mode == "demo":
        result = run_demo_variant(a, work)
    else:
        fn = run_ours if a.variant == "ours" else run_plain
        result = fn(a, work / "tasks", work / "item_tokenizer", work / f"out_{a.variant}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    Path(a.result).write_text(json.dumps({**result, "peak_rss_mb": peak_mb}))


def main() -> None:
    from recdata.io import atomic_write_json
    from recdata.paths import default_llm_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["synthetic", "demo"], default="synthetic")
    p.add_argument("--config", default="configs/demo_ml100k.yaml", help="demo: data / tokenizer / tasks / train")
    p.add_argument("--variants", default="before,after", help=f"demo: comma-separated, of {list(DEMO_VARIANTS)}")
    p.add_argument("--item_tokenizer_dir", default="", help="demo: a real ItemTokenizer (default: a stand-in)")
    p.add_argument("--set", action="append", default=[], help="demo: VARIANT.tasks|train.KEY=VALUE (repeatable)")
    p.add_argument("--model_dir", default=str(default_llm_dir()))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--history", type=int, default=10, help="items per prompt (4 code tokens each)")
    p.add_argument("--repeats", type=int, default=1, help="alternate ours/plain this many times; medians reported")
    p.add_argument("--out", default="bench_results/bench_train.json")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.variant:
        return child(a)
    if not Path(a.model_dir).is_dir():
        raise SystemExit(f"model folder {a.model_dir} not found; pass --model_dir or run `make setup`")
    if a.mode == "demo":
        return main_demo(a)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        make_data(work, Path(a.model_dir), n_rows=a.batch_size * (a.steps + 1), history=a.history)
        runs: dict[str, list[dict]] = {"ours": [], "plain": []}
        for _ in range(a.repeats):
            for variant in ("ours", "plain"):
                res = work / f"{variant}.json"
                cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant, "--work", str(work),
                       "--result", str(res)]
                subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                runs[variant].append(json.loads(res.read_text()))
    # Rounds run back to back (ours, plain), so the per-round ratio cancels most of the drift of a shared machine.
    ratios = sorted(o["tokens_per_s"] / p["tokens_per_s"] for o, p in zip(runs["ours"], runs["plain"], strict=True))
    ratio = ratios[len(ratios) // 2]
    med = {v: sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2] for v, rs in runs.items()}  # median run
    print(f"\n{'variant':<8} {'round':>5} {'tokens/s':>10} {'tokens':>8} {'seconds':>8} {'peak RSS MB':>12}")
    for i in range(a.repeats):
        for v in ("ours", "plain"):
            m = runs[v][i]
            print(f"{v:<8} {i:>5} {m['tokens_per_s']:>10.1f} {m['tokens']:>8d} {m['seconds']:>8.1f} "
                  f"{m['peak_rss_mb']:>12.0f}")
    print(f"per-round ratios ours/plain: {[round(r, 3) for r in ratios]}; median {ratio:.3f} (goal >= 0.95)")
    atomic_write_json(a.out, {"config": {k: v for k, v in vars(a).items() if k not in ("variant", "work", "result")},
                              "runs": runs, "median_run": med, "round_ratios": ratios, "ratio_tokens_per_s": ratio})


if __name__ == "__main__":
    main()
