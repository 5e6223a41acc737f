"""``alignrec recommend``: an ad-hoc top-K for one history, with item titles, to check a model by eye.

    alignrec recommend --model_dir runs/demo/train/model --history 50,172,133
    alignrec recommend --model_dir runs/demo/train/model --user 42 --k 5
    alignrec recommend --model_dir M --split_dir runs/demo/data/split --history 50,172 --json
    alignrec recommend --model_dir runs/demo/train/model --request "a funny film for a rainy sunday" --user 42

Titles (and ``--user`` histories) come from the split dataset: ``--split_dir``, or the pipeline's own
``<run>/data/split`` when ``--model_dir`` is ``<run>/train/model``. ``--request`` asks in words, as ``alignrec
evaluate --task request`` / ``request_history`` does (``inference.requests``), optionally with the request's
sentence vector as a prior in the item head (``--request_prior_weight``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from inference.decode_normaliser import NORMALISERS
from recdata.config import parse_config
from recdata.errors import ConfigError, InputFileError, UserError

logger = logging.getLogger(__name__)

ADHOC = "adhoc"  # the id of a --history / --request without a --user


@dataclass
class RecommendArgs:
    model_dir: str = field(metadata={"help": "Trained run folder (trainer output_dir, or its merged/ folder)."})
    history: str = field(default="", metadata={"help": "Comma-separated item ids, oldest first (e.g. 50,172,133)."})
    request: str = field(default="", metadata={
        "help": "A request in words: the model is asked with the request task's prompt (query2item's, as `alignrec "
                "evaluate --task request` asks), the history (--history / --user, optional) in front."})
    request_prior_weight: float = field(default=0.0, metadata={
        "help": "With --request: the request's sentence vector as a content prior in the item head (this x cosine "
                "with each item's text vector; `alignrec evaluate --request_prior_weights` chooses it on valid "
                "requests); needs the split (item texts) and a run with an item head. 0 = none."})
    encoder_dir: str = field(default="", metadata={
        "help": "Sentence encoder of --request_prior_weight; empty = the default all-MiniLM-L6-v2."})
    user: str = field(default="", metadata={"help": "A user id of the split: recommend from their serving history "
                                                    "(last max_history items)."})
    split_dir: str = field(default="", metadata={"help": "Split dataset for titles and --user; default "
                                                         "<run>/data/split when model_dir is <run>/train/model."})
    k: int = field(default=10, metadata={"help": "Items to recommend."})
    num_beams: int = field(default=0, metadata={"help": "Beam width (>= k); 0 = max(k, 20)."})
    exclude_history: bool = field(default=True, metadata={"help": "Never recommend an item of the history."})
    popularity_penalty: float = field(default=0.0, metadata={
        "help": "Decode as evaluated: log p(item | user) - popularity_penalty * log p_train(item) (needs the split)."})
    item_head_decode_weight: float | None = field(default=None, metadata={
        "help": "Decode as evaluated: a run with an item head ranks by log p(codes) + this x log p_head(item); "
                "unset = the run's own weight."})
    item_vector_prior_weight: float = field(default=0.0, metadata={
        "help": "Decode as evaluated: the content prior in the item head (this x cos(u, v_item), u the unit mean "
                "of the history's vectors); 0 = none."})
    item_vectors: str = field(default="", metadata={
        "help": "vectors.npy + item_ids.json folder for item_vector_prior_weight; default <run>/embeddings when "
                "model_dir is <run>/train/model."})
    decode_normaliser: str = field(default="auto", metadata={
        "help": "Decode as evaluated: each beam step normalised over the full vocabulary (vocabulary, exact), over "
                "the trie children of the beam's node (children) or auto (children from 100,000 items).",
        "choices": list(NORMALISERS)})
    json: bool = field(default=False, metadata={"help": "Print JSON instead of a table."})
    device: str | None = field(default=None, metadata={"help": "torch device; default cuda if available else cpu."})

    def __post_init__(self) -> None:
        if self.history.strip() and self.user.strip():
            raise ConfigError("give one of --history ITEM,ITEM,... or --user USER_ID, not both")
        if not (self.history.strip() or self.user.strip() or self.request.strip()):
            raise ConfigError("give exactly one of --history ITEM,ITEM,... or --user USER_ID (or a --request)")
        if self.request_prior_weight < 0:
            raise ConfigError(f"request_prior_weight must be >= 0, got {self.request_prior_weight:g}")
        if self.request_prior_weight and not self.request.strip():
            raise ConfigError("--request_prior_weight reads a request's words: give --request")
        if self.request.strip() and (self.popularity_penalty or self.item_vector_prior_weight):
            raise ConfigError("--request decodes as the request task does: without --popularity_penalty and "
                              "--item_vector_prior_weight (next-item options); drop them")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        self.num_beams = self.num_beams or max(self.k, 20)
        if self.decode_normaliser not in NORMALISERS:
            raise ConfigError(f"decode_normaliser must be one of {list(NORMALISERS)}, got {self.decode_normaliser!r}")
        if self.num_beams < self.k:
            raise ConfigError(f"num_beams ({self.num_beams}) must be >= k ({self.k}); raise --num_beams")


def register(subparsers) -> None:
    p = subparsers.add_parser("recommend", help="Top-K for one history or user, with titles (check a model by eye).",
                              add_help=False)
    p.set_defaults(handler=_run_recommend)


def find_split_dir(cfg: RecommendArgs) -> Path | None:
    if cfg.split_dir:
        if not Path(cfg.split_dir).is_dir():
            raise InputFileError(f"--split_dir {cfg.split_dir} does not exist; pass a `data prepare` output folder")
        return Path(cfg.split_dir)
    beside = Path(cfg.model_dir).resolve().parent.parent / "data" / "split"  # <run>/train/model -> <run>/data/split
    return beside if (beside / "split.json").is_file() else None


def recommend_for(cfg: RecommendArgs) -> dict:
    """{"history": [...], "recommendations": [{"rank", "item_id", "score", "title"}]} for ``cfg``."""
    from inference.item_prior import load_item_prior
    from inference.trained_run import TrainedRun, check_item_head_override
    from recdata import SplitDataset

    head_weight = check_item_head_override(cfg.model_dir, cfg.item_head_decode_weight)
    prior = load_item_prior(cfg.model_dir, cfg.item_vector_prior_weight, cfg.item_vectors, head_weight)
    split_dir = find_split_dir(cfg)
    split = SplitDataset.load(split_dir) if split_dir else None
    if cfg.request_prior_weight:
        from inference.requests import check_request_prior

        check_request_prior(cfg.model_dir, head_weight)
        if split is None:
            raise ConfigError("--request_prior_weight needs the split dataset (item texts): pass --split_dir")
    if cfg.user:
        if split is None:
            raise ConfigError("--user needs the split dataset: pass --split_dir")
        histories = split.serving_histories()
        if cfg.user not in histories:
            raise UserError(f"user {cfg.user!r} is not in {split_dir} ({len(histories)} users, e.g. "
                            f"{sorted(histories)[:3]}); check the id")
        history = histories[cfg.user]
    else:
        history = [i.strip() for i in cfg.history.split(",") if i.strip()]  # empty: a request alone
    run = TrainedRun.load(cfg.model_dir, device=cfg.device)
    known = set(run.item_tokenizer.item_ids)
    unknown = [i for i in history if i not in known]
    if unknown:
        raise UserError(f"{len(unknown)} history item(s) have no code in {cfg.model_dir} (e.g. {unknown[:3]}); "
                        "use item ids of the catalogue the model was trained on")
    titles = {row["item_id"]: row["title"] for row in split.dataset.items} if split is not None else {}
    if split is None:
        logger.warning("no split dataset found (pass --split_dir): showing item ids without titles")
    counts = None
    if cfg.popularity_penalty:
        if split is None:
            raise ConfigError("--popularity_penalty needs the split dataset (training counts): pass --split_dir")
        from recdata.popularity import train_popularity

        counts = train_popularity(split)
    if cfg.request.strip():
        fn = _request_recommender(cfg, run, split, head_weight, with_history=bool(history))
    else:
        fn = run.recommender(cfg.k, cfg.num_beams, cfg.exclude_history, 1, popularity_penalty=cfg.popularity_penalty,
                             item_counts=counts, item_head_weight=head_weight,
                             decode_normaliser=cfg.decode_normaliser, **prior)
    (ranked,) = fn([cfg.user or ADHOC], [history])
    return {
        "user": cfg.user or None,
        **({"request": cfg.request.strip()} if cfg.request.strip() else {}),
        "history": [{"item_id": i, "title": titles.get(i, "")} for i in history],
        "recommendations": [{"rank": r, "item_id": i, "score": float(s), "title": titles.get(i, "")}
                            for r, (i, s) in enumerate(ranked, start=1)],
    }


def _request_recommender(cfg: RecommendArgs, run, split, head_weight: float | None, with_history: bool):
    """``recommend_fn`` asking ``cfg.request`` (as the request task asks), with its prior when weighted."""
    from inference.requests import llm_request_recommender, minilm_retriever

    request = cfg.request.strip()
    user = cfg.user or ADHOC
    retriever = None
    if cfg.request_prior_weight:
        retriever = minilm_retriever(split, [{"request_id": user, "request": request}], cfg.encoder_dir,
                                     device=cfg.device or "cpu")
    return llm_request_recommender(run, {user: request}, cfg.k, cfg.num_beams, with_history, cfg.exclude_history, 1,
                                   head_weight, cfg.decode_normaliser, prior_weight=cfg.request_prior_weight,
                                   retriever=retriever)


def format_table(result: dict) -> str:
    lines = [f"request: {result['request']}"] if result.get("request") else []
    lines.append(f"history ({len(result['history'])} items, oldest first):")
    lines += [f"  {h['item_id']:>10}  {h['title']}" for h in result["history"]]
    lines.append("recommendations:")
    lines.append(f"  {'rank':>4}  {'item_id':>10}  {'score':>9}  title")
    lines += [f"  {r['rank']:>4}  {r['item_id']:>10}  {r['score']:>9.3f}  {r['title']}" for r in result["recommendations"]]
    return "\n".join(lines)


def _run_recommend(args, argv: list[str]) -> int:
    from recdata.text_safety import terminal_safe

    (cfg,) = parse_config([RecommendArgs], argv)
    result = recommend_for(cfg)
    text = json.dumps(result, indent=2, ensure_ascii=False) if cfg.json else format_table(result)
    sys.stdout.write(terminal_safe(text) + "\n")  # titles are user data: no raw escape sequences
    return 0
