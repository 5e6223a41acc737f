"""Training throughput: our trainer (trainer.run_sft) vs a plain transformers.Trainer + peft loop.

Both run LoRA (all attention + MLP projections, code-token rows via trainable_token_indices) on the same
tokenized prompt/completion rows, batch size, seed and steps; each variant runs in its own subprocess so peak
RSS is its own. Tokens/s counts non-padding tokens after ``--warmup`` steps. Prints a table, writes JSON.

    .venv/bin/python scripts/bench_train.py --steps 12 --out bench_train.json        # SmolLM2 (default LLM)
    .venv/bin/python scripts/bench_train.py --model_dir PATH --steps 20                # any local HF folder
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


def child(a) -> None:
    work = Path(a.work)
    fn = run_ours if a.variant == "ours" else run_plain
    result = fn(a, work / "tasks", work / "item_tokenizer", work / f"out_{a.variant}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    Path(a.result).write_text(json.dumps({**result, "peak_rss_mb": peak_mb}))


def main() -> None:
    from recdata.io import atomic_write_json
    from recdata.paths import default_llm_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", default=str(default_llm_dir()))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--history", type=int, default=10, help="items per prompt (4 code tokens each)")
    p.add_argument("--repeats", type=int, default=1, help="alternate ours/plain this many times; medians reported")
    p.add_argument("--out", default="bench_results/bench_train.json")
    p.add_argument("--variant", choices=["ours", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.variant:
        return child(a)
    if not Path(a.model_dir).is_dir():
        raise SystemExit(f"model folder {a.model_dir} not found; pass --model_dir or run `make setup`")
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
