"""Why does the LLM row lose to popularity? Train one short recipe variant on a finished run's split and
ItemTokenizer, then measure what the model learned. Valid part only (the test part is never read).

    .venv/bin/python scripts/diagnose_llm.py --run_dir runs/demo_ml100k --steps 40                 # old recipe
    .venv/bin/python scripts/diagnose_llm.py --run_dir runs/demo_ml100k --steps 40 \\
        --weights '{"seqrec": 1.0}' --completion_only_loss false --code_rows_learning_rate 5e-3    # demo recipe

Reports: training tokens/s (non-padding); how far the code-token rows moved (vs their norm) and the LoRA
update relative to each base weight; teacher-forced NLL of the valid targets (nats per item) next to the
Laplace-smoothed popularity NLL and the uniform one; Recall/NDCG@10 of ours and popularity on the same users
(history excluded); whether the top-10 lists follow the item marginal (distinct items, share from the 50
most popular, Spearman of recommendation counts vs training counts); the level-1 code distribution (mean
over users) against the training marginal. Prints JSON and writes it to ``--out_json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recdata.config import parse_config  # noqa: E402
from recdata.io import atomic_write_json  # noqa: E402

logger = logging.getLogger("diagnose_llm")


@dataclass
class DiagnoseConfig:
    run_dir: str = field(metadata={"help": "A run folder with data/split and tokenizer/item_tokenizer stages done."})
    work_dir: str = field(default="bench_results/diagnose_llm", metadata={"help": "Tasks + model of this variant."})
    out_json: str = field(default="bench_results/diagnose_llm.json", metadata={"help": "Where the JSON goes."})
    model_name_or_path: str = field(default="", metadata={"help": "LLM folder; empty: the converted SmolLM2."})
    steps: int = field(default=40, metadata={"help": "Training steps (examples = steps x batch_size)."})
    batch_size: int = field(default=8, metadata={"help": "Examples per step."})
    weights: str = field(default='{"seqrec": 0.7, "item2code": 0.15, "code2item": 0.15}',
                         metadata={"help": "Task mixture (sft_tasks weights JSON)."})
    max_history: int = field(default=10, metadata={"help": "History items per prompt."})
    completion_only_loss: bool = field(default=True, metadata={"help": "false: the prompt's codes are targets too."})
    learning_rate: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    code_rows_learning_rate: float = field(default=0.0, metadata={"help": "Code-row rate (0 = learning_rate)."})
    users: int = field(default=200, metadata={"help": "First N valid users evaluated."})
    seed: int = field(default=42, metadata={"help": "Task sampling and training seed."})


class RowProbe:
    """TrainerCallback: at the end, how far the trainable code rows moved and the relative LoRA update."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.result: dict = {}
        probe = self

        class _Callback(TrainerCallback):
            def on_train_end(self, args, state, control, model=None, **kwargs):
                probe.measure(model)

        self.callback = _Callback()

    @torch.no_grad()
    def measure(self, model) -> None:
        rows, lora = {}, []
        for name, module in model.named_modules():
            delta = getattr(module, "trainable_tokens_delta", None)
            if delta is not None and "default" in delta and not getattr(module, "_tied_adapter", []):
                new, old = delta["default"].float(), module.trainable_tokens_original["default"].float()
                move = (new - old).norm(dim=1)  # [n_codes]
                rows[name] = {"rows": int(new.shape[0]), "mean_row_move": float(move.mean()),
                              "mean_row_norm_init": float(old.norm(dim=1).mean()),
                              "relative_move": float(move.mean() / old.norm(dim=1).mean()),
                              "max_element_move": float((new - old).abs().max())}
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                update = module.lora_B["default"].weight.float() @ module.lora_A["default"].weight.float()
                lora.append(float(update.norm() * module.scaling["default"] / module.base_layer.weight.float().norm()))
        self.result = {"code_rows": rows, "lora_relative_update": {"mean": float(np.mean(lora)), "max": float(np.max(lora)),
                                                                   "modules": len(lora)}}


def build_variant_tasks(cfg: DiagnoseConfig, split, item_tokenizer, hf_tokenizer, out: Path) -> dict:
    from sft_tasks.builder import build_tasks, save_task_build
    from sft_tasks.config import TaskConfig

    tcfg = TaskConfig(weights=cfg.weights, mixture_size=cfg.steps * cfg.batch_size, max_history=cfg.max_history,
                      preference_negatives=0, seed=cfg.seed)
    build = build_tasks(tcfg, split, item_tokenizer, hf_tokenizer, with_preference=False)
    if out.exists():
        shutil.rmtree(out)
    save_task_build(build, out, {}, (tcfg,))
    return dict(build.info["mixture_counts"])


def train_variant(cfg: DiagnoseConfig, tasks: Path, item_tokenizer_dir: Path, out: Path) -> dict:
    from trainer.callbacks import read_metrics
    from trainer.config import parse_train_config
    from trainer.train import run_sft

    argv = ["--dataset_dir", str(tasks), "--item_tokenizer_dir", str(item_tokenizer_dir), "--output_dir", str(out),
            "--learning_rate", str(cfg.learning_rate), "--code_rows_learning_rate", str(cfg.code_rows_learning_rate),
            "--lr_scheduler_type", "cosine", "--warmup_steps", "10", "--per_device_train_batch_size", str(cfg.batch_size),
            "--max_steps", str(cfg.steps), "--max_length", "256", "--logging_steps", "10", "--eval_strategy", "no",
            "--save_strategy", "no", "--report_to", "none", "--seed", str(cfg.seed), "--tensorboard", "false",
            "--loss_curve", "false", "--completion_only_loss", str(cfg.completion_only_loss).lower(),
            "--include_num_input_tokens_seen", "true"]
    if cfg.model_name_or_path:
        argv += ["--model_name_or_path", cfg.model_name_or_path]
    probe = RowProbe()
    run_sft(*parse_train_config(argv), extra_callbacks=[probe.callback])
    rows = read_metrics(out / "metrics.jsonl")
    end = next((r for r in reversed(rows) if "train_loss" in r), {})
    return {"losses": [(r["step"], round(r["loss"], 3)) for r in rows if "loss" in r],
            "train_runtime_s": end.get("train_runtime"), **probe.result}


@torch.inference_mode()
def item_nll(model, hf_tokenizer, item_tokenizer, prompts: list[list[int]], targets: list[str]) -> list[float]:
    """-log p(target's code tokens | prompt), summed over the code levels (nats per item)."""
    from inference.recommender import left_pad

    codes = item_tokenizer.item_token_ids(hf_tokenizer)  # [N, L]
    row_of = {item: i for i, item in enumerate(item_tokenizer.item_ids)}
    width = codes.shape[1]
    out: list[float] = []
    for start in range(0, len(prompts), 16):
        seqs = [list(p) + [int(t) for t in codes[row_of[y]]] for p, y in
                zip(prompts[start:start + 16], targets[start:start + 16], strict=True)]
        ids, mask = left_pad(seqs)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -width - 1:-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -width:].unsqueeze(-1)).squeeze(-1)  # [b, L]
        out += (-logp.sum(-1)).tolist()
    return out


@torch.inference_mode()
def level1_distribution(model, hf_tokenizer, item_tokenizer, prompts: list[list[int]]) -> np.ndarray:
    """p(first code | prompt) renormalised over the level-1 code tokens: [users, C0]."""
    from inference.recommender import left_pad

    first = torch.tensor(item_tokenizer.code_token_ids(hf_tokenizer)[: item_tokenizer.codebook_sizes[0]])
    rows = []
    for start in range(0, len(prompts), 16):
        ids, mask = left_pad(prompts[start:start + 16])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1].float()
        rows.append(torch.softmax(logits[:, first], -1))
    return torch.cat(rows).numpy()


def marginal_stats(lists: list[list[tuple[str, float]]], popularity: dict[str, int], catalogue: list[str]) -> dict:
    from scipy.stats import spearmanr

    counts = Counter(item for row in lists for item, _ in row[:10])
    ranking = sorted(catalogue, key=lambda i: -popularity.get(i, 0))
    top50, rank = set(ranking[:50]), {item: r for r, item in enumerate(ranking)}
    items = list(counts)
    slots = sum(counts.values())
    return {"distinct_items_in_top10_lists": len(counts), "catalogue": len(catalogue),
            "share_of_slots_from_popular_top50": sum(counts[i] for i in top50) / max(1, slots),
            "median_popularity_rank_recommended": float(np.median([rank[i] for row in lists for i, _ in row[:10]])),
            "spearman_recommendations_vs_train_counts": float(spearmanr([counts[i] for i in items],
                                                                         [popularity.get(i, 0) for i in items]).correlation)}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([DiagnoseConfig], argv)
    from inference.recommender import llm_recommender, tokenize_prompts
    from recdata import SplitDataset
    from recdata.evaluation import evaluate_recommender
    from recdata.popularity import popularity_recommender, train_popularity
    from sft_tasks import seqrec_prompt
    from tokenization import ItemTokenizer
    from trainer import load_for_inference
    from trainer.config import ModelArguments
    from trainer.model_setup import load_tokenizer

    run, work = Path(cfg.run_dir), Path(cfg.work_dir)
    split = SplitDataset.load(run / "data" / "split")
    item_tokenizer_dir = run / "tokenizer" / "item_tokenizer"
    hf_tokenizer = load_tokenizer(ModelArguments(model_name_or_path=cfg.model_name_or_path))
    result: dict = {"config": vars(cfg)}
    result["tasks"] = build_variant_tasks(cfg, split, ItemTokenizer.from_pretrained(item_tokenizer_dir), hf_tokenizer,
                                          work / "tasks")
    result["train"] = train_variant(cfg, work / "tasks", item_tokenizer_dir, work / "model")
    examples = split.eval_examples("valid").select(range(min(cfg.users, split.eval_examples("valid").num_rows)))
    catalogue, popularity = split.dataset.item_ids(), train_popularity(split)
    model, tok, itok = load_for_inference(work / "model", device="cpu")
    prompts = tokenize_prompts(tok, [seqrec_prompt(list(h), itok, tok) for h in examples["history"]])
    tokens = sum(len(p) for p in prompts) / len(prompts)
    result["train"]["prompt_tokens_mean_valid"] = tokens
    lists: list = []
    fn = llm_recommender(model, tok, itok, 20, 20, True, 8)

    def recording(user_ids, histories):
        out = fn(user_ids, histories)
        lists.extend(out)
        return out

    started = time.time()
    ours = evaluate_recommender(recording, examples, (10, 20), catalogue, popularity, show_progress=False)
    seconds = time.time() - started
    pop = evaluate_recommender(popularity_recommender(split, 20, True), examples, (10, 20), catalogue, popularity,
                               show_progress=False)
    pick = ("recall@10", "ndcg@10", "recall@20")
    result["valid"] = {"users": len(examples), "ours": {k: ours["overall"][k] for k in pick},
                       "popularity": {k: pop["overall"][k] for k in pick}, "ours_coverage@10": ours["coverage"]["@10"],
                       "users_per_s": len(examples) / seconds}
    result["marginal"] = marginal_stats(lists, popularity, catalogue)
    nll = item_nll(model, tok, itok, prompts, list(examples["target"]))
    total = sum(popularity.values())
    pop_nll = [-math.log((popularity.get(t, 0) + 1) / (total + len(catalogue))) for t in examples["target"]]
    result["item_nll"] = {"ours": float(np.mean(nll)), "ours_se": float(np.std(nll) / math.sqrt(len(nll))),
                          "popularity_laplace": float(np.mean(pop_nll)), "uniform": math.log(len(catalogue))}
    probs = level1_distribution(model, tok, itok, prompts)  # [users, C0]
    size = itok.codebook_sizes[0]
    train_first = np.bincount([itok.item_to_codes(i)[0] for _, seq in split.train_sequences() for i in seq],
                              minlength=size).astype(float)
    train_first /= train_first.sum()
    mean = probs.mean(0)

    def entropy(q):
        return float(-(q * np.log(q + 1e-12)).sum())

    result["level1"] = {"kl_train_vs_model_mean": float(np.sum(train_first * np.log((train_first + 1e-12) / (mean + 1e-12)))),
                        "kl_train_vs_uniform": float(np.sum(train_first * np.log((train_first + 1e-12) * size))),
                        "entropy_train": entropy(train_first), "entropy_model_mean": entropy(mean),
                        "entropy_per_user_mean": float(np.mean([entropy(q) for q in probs]))}
    atomic_write_json(Path(cfg.out_json), result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
