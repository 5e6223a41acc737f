"""Decoding speed: our trie beam search vs HF ``generate`` + a per-beam Python dict trie vs the compute floor.

    .venv/bin/python scripts/bench_decode.py                      # SmolLM2-135M, 1,000 items, 4 x 256 codes
    .venv/bin/python scripts/bench_decode.py --num_users 16 --out_json bench_results/decode.json

Setup (issue 5 item 6): random ItemTokenizer codes over ``num_items`` items, ``prompt_len``-token prompts,
``num_beams`` beams, top-``k``. Rows: ours (one prefill per batch, KV cache expanded to the beams, exactly
``code_len`` scoring steps), the peers' way (HF beam search with ``prefix_allowed_tokens_fn`` walking a dict
trie per beam, one user per call), and the floor (one prefill + ``code_len`` single-token decode forwards over
all beams, no search work). Checks that our top-K equals the reference's, and the trie size at 1M items.
Prints a table and writes JSON.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.beam_search import constrained_beam_search  # noqa: E402
from inference.trie import ItemTrie  # noqa: E402
from recdata.config import config_to_dict, parse_config  # noqa: E402
from recdata.io import atomic_write_json  # noqa: E402
from recdata.paths import default_llm_dir, require  # noqa: E402

logger = logging.getLogger("bench_decode")


@dataclass
class BenchDecodeConfig:
    llm_dir: str = field(default="", metadata={"help": "HF model folder; default: the converted SmolLM2-135M."})
    num_items: int = field(default=1000, metadata={"help": "Catalogue size (random distinct codes)."})
    num_levels: int = field(default=4, metadata={"help": "Code length (tokens per item)."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per level."})
    prompt_len: int = field(default=100, metadata={"help": "Prompt tokens per user."})
    num_beams: int = field(default=20, metadata={"help": "Beam width."})
    k: int = field(default=20, metadata={"help": "Top-K compared between ours and the reference."})
    batch_size: int = field(default=8, metadata={"help": "Users per batch for ours and the floor."})
    num_users: int = field(default=8, metadata={"help": "Users timed for ours and the floor."})
    ref_users: int = field(default=2, metadata={"help": "Users timed (and compared) for the slow HF reference."})
    trie_items: int = field(default=1_000_000, metadata={"help": "Catalogue size for the trie memory check (0: skip)."})
    seed: int = field(default=0, metadata={"help": "Seed for codes and prompts."})
    out_json: str = field(default="bench_results/bench_decode.json", metadata={"help": "Where the JSON goes."})

    def __post_init__(self) -> None:
        if self.num_beams < self.k:
            raise ValueError(f"num_beams ({self.num_beams}) must be >= k ({self.k})")
        if self.num_items > self.codebook_size ** self.num_levels:
            raise ValueError(f"num_items {self.num_items} exceeds the code grid {self.codebook_size}^{self.num_levels}")
        if min(self.num_users, self.ref_users, self.batch_size, self.prompt_len) < 1:
            raise ValueError("num_users, ref_users, batch_size and prompt_len must be >= 1")


def random_codes(n: int, levels: int, size: int, rng: np.random.Generator) -> np.ndarray:
    codes = np.unique(rng.integers(0, size, size=(int(n * 1.1) + 16, levels)), axis=0)
    return codes[rng.permutation(len(codes))[:n]]


def setup(cfg: BenchDecodeConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenization import ItemTokenizer

    llm_dir = Path(cfg.llm_dir) if cfg.llm_dir else require(default_llm_dir(), "the default SmolLM2 folder")
    rng = np.random.default_rng(cfg.seed)
    hf_tok = AutoTokenizer.from_pretrained(llm_dir)
    base_vocab = len(hf_tok)
    codes = random_codes(cfg.num_items, cfg.num_levels, cfg.codebook_size, rng)
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(cfg.num_items)], codes,
                                        [cfg.codebook_size] * cfg.num_levels)
    item_tok.add_to_tokenizer(hf_tok)
    model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    model.resize_token_embeddings(len(hf_tok), mean_resizing=False)
    model.eval()
    prompts = torch.from_numpy(rng.integers(100, base_vocab, size=(max(cfg.num_users, cfg.ref_users), cfg.prompt_len)))
    return model, hf_tok, item_tok, prompts, llm_dir


def time_ours(model, prompts: torch.Tensor, trie: ItemTrie, cfg: BenchDecodeConfig):
    results, start = [], time.perf_counter()
    for b in range(0, len(prompts), cfg.batch_size):
        ids = prompts[b:b + cfg.batch_size]
        out = constrained_beam_search(model, ids, torch.ones_like(ids), trie, cfg.num_beams)
        results += list(zip(out.items[:, :cfg.k].tolist(), out.scores[:, :cfg.k].tolist(), strict=True))
    return (time.perf_counter() - start) / len(prompts), results


@torch.inference_mode()
def time_floor(model, prompts: torch.Tensor, cfg: BenchDecodeConfig) -> float:
    """One prefill per batch + ``code_len`` one-token forwards over batch x beams: the model work alone."""
    start = time.perf_counter()
    for b in range(0, len(prompts), cfg.batch_size):
        ids = prompts[b:b + cfg.batch_size]
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(cfg.num_beams)
        tok = torch.full((len(ids) * cfg.num_beams, 1), 1000, dtype=torch.long)
        for _ in range(cfg.num_levels):
            cache = model(input_ids=tok, past_key_values=cache, use_cache=True).past_key_values
    return (time.perf_counter() - start) / len(prompts)


def time_reference(model, hf_tok, token_ids: np.ndarray, prompts: torch.Tensor, cfg: BenchDecodeConfig):
    """HF beam search, one user per call, ``prefix_allowed_tokens_fn`` walking a nested dict trie per beam."""
    trie: dict = {}
    for row in token_ids.tolist():
        node = trie
        for tok in row:
            node = node.setdefault(tok, {})
    by_code = {tuple(row): i for i, row in enumerate(token_ids.tolist())}

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = trie
        for tok in sent[cfg.prompt_len:].tolist():
            node = node.get(tok, {})
        return list(node)  # empty -> all masked (closed), unlike peers that fall back to unconstrained

    results, start = [], time.perf_counter()
    for ids in prompts:
        gen = model.generate(
            input_ids=ids[None], attention_mask=torch.ones_like(ids[None]), num_beams=cfg.num_beams,
            num_return_sequences=cfg.k, max_new_tokens=cfg.num_levels, do_sample=False, length_penalty=0.0,
            early_stopping=True, prefix_allowed_tokens_fn=allowed, output_scores=True, return_dict_in_generate=True,
            pad_token_id=hf_tok.pad_token_id if hf_tok.pad_token_id is not None else hf_tok.eos_token_id,
        )
        items = [by_code.get(tuple(seq[cfg.prompt_len:].tolist()), -1) for seq in gen.sequences]
        results.append((items, gen.sequences_scores.tolist()))
    return (time.perf_counter() - start) / len(prompts), results


def compare(ours, ref, tol: float = 1e-3) -> dict:
    """Same top-K items in the same order (order may differ only between items whose scores tie within tol)."""
    same_sets = same_order = 0
    max_diff = 0.0
    for (oi, os_), (ri, rs) in zip(ours, ref, strict=False):
        same_sets += set(oi) == set(ri)
        same_order += oi == ri or all(a == b or abs(x - y) < tol for a, b, x, y in zip(oi, ri, os_, rs, strict=True))
        ref_score = dict(zip(ri, rs, strict=True))
        max_diff = max([max_diff] + [abs(s - ref_score[i]) for i, s in zip(oi, os_, strict=True) if i in ref_score])
    n = min(len(ours), len(ref))
    return {"users": n, "same_items": same_sets, "same_order_mod_ties": same_order, "max_score_diff": max_diff,
            "identical": same_sets == n and same_order == n}


def trie_memory(cfg: BenchDecodeConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    ids = random_codes(cfg.trie_items, cfg.num_levels, cfg.codebook_size, rng) + 50_000  # token-id range
    start = time.perf_counter()
    trie = ItemTrie(ids)
    return {"items": trie.num_items, "edges": sum(trie.num_nodes[1:]), "build_s": time.perf_counter() - start,
            "mb": trie.nbytes() / 2**20}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchDecodeConfig], argv)
    model, hf_tok, item_tok, prompts, llm_dir = setup(cfg)
    token_ids = item_tok.item_token_ids(hf_tok)
    trie = ItemTrie(token_ids, item_tok.item_ids)
    params = sum(p.numel() for p in model.parameters())
    logger.info("warm-up")
    time_ours(model, prompts[:1], trie, cfg)
    time_floor(model, prompts[:1], cfg)
    logger.info("timing ours on %d users (batch %d)", cfg.num_users, cfg.batch_size)
    ours_s, ours = time_ours(model, prompts[:cfg.num_users], trie, cfg)
    floor_s = time_floor(model, prompts[:cfg.num_users], cfg)
    logger.info("timing the HF generate reference on %d users", cfg.ref_users)
    ref_s, ref = time_reference(model, hf_tok, token_ids, prompts[:cfg.ref_users], cfg)
    check = compare(ours[:cfg.ref_users], ref)
    invalid = sum(i < 0 for items, _ in ours for i in items)
    flops = 2 * params * (cfg.prompt_len + cfg.num_beams * cfg.num_levels)
    result = {
        "config": config_to_dict(cfg), "llm_dir": str(llm_dir), "params": params, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "per_user_s": {"ours": ours_s, "floor": floor_s, "hf_generate_dict_trie": ref_s},
        "ours_over_floor": ours_s / floor_s, "speedup_vs_hf": ref_s / ours_s, "floor_flops_per_user": flops,
        "topk_check": check, "invalid_outputs": invalid,
        "trie_memory": trie_memory(cfg) if cfg.trie_items else None,
    }
    rows = [("ours (trie beam search, batched)", ours_s), ("floor (prefill + decode forwards)", floor_s),
            ("HF generate + dict-trie prefix fn", ref_s)]
    print(f"\n{cfg.num_items} items, {cfg.num_levels} x {cfg.codebook_size} codes, {cfg.prompt_len}-token prompts, "
          f"{cfg.num_beams} beams, top-{cfg.k}, {params / 1e6:.0f}M params, {torch.get_num_threads()} threads")
    print(f"| {'method':<36} | per user (s) | vs ours |\n|{'-' * 38}|{'-' * 14}|{'-' * 9}|")
    for name, sec in rows:
        print(f"| {name:<36} | {sec:>12.3f} | {sec / ours_s:>6.2f}x |")
    print(f"ours / floor = {ours_s / floor_s:.2f} (goal <= 2); speed-up vs HF = {ref_s / ours_s:.1f}x (goal >= 3)")
    print(f"top-{cfg.k} identical to the reference: {check}; invalid outputs: {invalid}")
    if result["trie_memory"]:
        tm = result["trie_memory"]
        print(f"trie at {tm['items']:,} items: {tm['edges']:,} edges, {tm['mb']:.0f} MB, built in {tm['build_s']:.1f} s")
    atomic_write_json(cfg.out_json, result)
    print(f"wrote {cfg.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
