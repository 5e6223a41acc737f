"""``alignrec evaluate`` (and, when present, the cache commands): thin handlers over the inference library."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from inference.decode_normaliser import NORMALISER_KEY, NORMALISERS, describe_normaliser
from recdata.config import config_to_dict, parse_config

logger = logging.getLogger(__name__)

AUTO_BEAM_FACTOR = 1.5


def auto_beams(max_k: int) -> int:
    """Default beam width for a top-``max_k`` list: wider than K, so the K-th slot is not the beam's edge."""
    return int(round(AUTO_BEAM_FACTOR * max_k))


@dataclass
class EvaluateConfig:
    model_dir: str = field(metadata={"help": "Trained run folder (trainer output_dir, or its merged/ folder)."})
    split_dir: str = field(metadata={"help": "Saved SplitDataset folder (`alignrec data prepare` output)."})
    out_dir: str = field(metadata={"help": "Where metrics.json and metrics.md are written."})
    part: str = field(default="test", metadata={"help": "Targets to score: 'valid' or 'test'."})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K for Recall/NDCG@K."})
    num_beams: int = field(
        default=0, metadata={"help": f"Beam width, >= max(ks) (beams are the candidates); 0 = auto: "
                                     f"{AUTO_BEAM_FACTOR} x max(ks) (a beam of exactly K limits Recall@K)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Users per beam-search batch (one prefill each)."})
    exclude_history: bool = field(default=True, metadata={"help": "Never recommend items in the user's history "
                                                                  "(every row: model and baselines; as the cache)."})
    max_examples: int | None = field(default=None, metadata={
        "help": "Score a seeded random sample of N examples (seed 0: the same users for every row and rerun; "
                "recorded in metrics.json as 'sample'), e.g. smoke runs or large user sets; unset = all."})
    popularity_baseline: bool = field(default=True, metadata={"help": "Add the most-popular baseline to the table."})
    text_retriever_baseline: bool = field(default=False, metadata={
        "help": "task next_item: add the 'text retriever' row: cosine between the mean of the history items' MiniLM "
                "text vectors and every item's (history excluded as for every row; needs no training, so it ranks "
                "cold items too). Vectors: the sentence encoder (encoder_dir) over the default item text template, "
                "cached; in `alignrec run`, the embeddings stage's own when they are MiniLM's, else its section's "
                "text settings with the sentence encoder."})
    popularity_penalty: float = field(default=0.0, metadata={
        "help": "Decoding ranks by log p(item | user) - popularity_penalty * log p_train(item) (training interactions + 1), applied at every beam depth: > 0 gives the long tail beams back, < 0 leans on the popularity prior (an under-trained model); 0 = plain log-probs. Choose it on valid users (scripts/bench_popularity_penalty.py), never on test."})
    item_head_decode_weight: float | None = field(default=None, metadata={
        "help": "A run trained with the flat item head (train.item_head_weight > 0) ranks by log p(codes) + this x "
                "log p_head(item); unset = the run's own train.item_head_decode_weight (its manifest). Overrides "
                "it without re-training (needs a run with an item head; >= 0); choose it on valid users, never on "
                "test, and build the cache with the same value."})
    item_vector_prior_weight: float = field(default=0.0, metadata={
        "help": "Content prior in the item head (a run with one, decoded with an item-head weight > 0): add this x "
                "cos(u, v_item) to the head's logit of each item, v from --item_vectors and u the unit mean of the "
                "user's history vectors; it steers every beam depth. 0 = none (nothing loaded). Choose it on valid "
                "users, never on test, and build the cache with the same value."})
    item_vectors: str = field(default="", metadata={
        "help": "Folder with vectors.npy + item_ids.json for item_vector_prior_weight; empty = the run's "
                "embeddings stage (<run>/embeddings beside model_dir <run>/train/model)."})
    decode_normaliser: str = field(default="auto", metadata={
        "help": "What each beam step's log-prob is normalised over. vocabulary: the full vocabulary (exact sequence "
                "log-probs; with the item-id level a token per item, so decoding grows with the catalogue). children: "
                "the trie children of the beam's node, the item head added at the leaf only (cost per user set by "
                "the live beams' children, not the vocabulary). auto: children from 100,000 items (the item "
                "softmaxes' threshold), else vocabulary. The resolved mode is recorded in metrics.json; build the "
                "cache with the same value.", "choices": list(NORMALISERS)})
    device: str | None = field(default=None, metadata={"help": "torch device; default cuda if available else cpu."})
    within_scenario: bool = field(default=True, metadata={
        "help": "On a split with scenarios, also rank each target within its scenario's catalogue (every "
                "recommender that takes scenarios=); the by-target-scenario slice of the whole-catalogue "
                "ranking is always reported."})
    scenario_prompts: bool = field(default=False, metadata={
        "help": "The model was trained with tasks.scenario_prompts: its prompts name the target scenario (needs "
                "a split with scenarios; the model is then scored within the target's scenario only)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})
    task: str = field(default="next_item", metadata={
        "help": "next_item: the next item of each user's history. request: requests in words (requests_file) "
                "answered by known valid / test targets, the request alone. request_history: the request plus the "
                "user's history.", "choices": ["next_item", "request", "request_history"]})
    requests_file: str = field(default="", metadata={
        "help": "task request*: `alignrec tasks requests` output (one request per line, its target and history)."})
    tasks_dir: str = field(default="", metadata={
        "help": "task request*: the tasks build the model trained on; a request found in its training rows is "
                "refused."})
    retriever_baseline: bool = field(default=True, metadata={
        "help": "task request*: add the MiniLM retriever row (cosine between request and item text vectors)."})
    encoder_dir: str = field(default="", metadata={
        "help": "Sentence encoder of the retriever rows (task request*; text_retriever_baseline in `alignrec "
                "evaluate`); empty = the default all-MiniLM-L6-v2."})
    mix_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75], metadata={
        "help": "task request_history: weights of the mean history vector in the retriever's query, chosen on "
                "the valid requests by NDCG@10."})
    request_prior_weights: list[float] = field(default_factory=list, metadata={
        "help": "task request*: add the 'alignrec + request prior' row: the run's decoding with the request's "
                "sentence vector (the retriever's) as a content prior in its item head (weight x cosine with each "
                "item's text vector added to the head's logits): the words read by the sentence encoder, the "
                "history and codes by the model. Several weights: chosen on the valid requests by NDCG@10 (each "
                "decodes them once), never on test. Needs a run with an item head; empty = no such row."})

    def __post_init__(self) -> None:
        if self.task not in ("next_item", "request", "request_history"):
            raise ValueError(f"task must be next_item, request or request_history, got {self.task!r}")
        if self.task != "next_item" and not (self.requests_file and self.tasks_dir):
            raise ValueError(f"task {self.task} needs --requests_file (`alignrec tasks requests`) and --tasks_dir "
                             "(the tasks build the model trained on, checked for leaked requests)")
        if self.text_retriever_baseline and self.task != "next_item":
            raise ValueError(f"text_retriever_baseline is a next_item row; task {self.task} has its own retriever row "
                             "(retriever_baseline)")
        if any(not 0 <= w <= 1 for w in self.mix_weights) or not self.mix_weights:
            raise ValueError(f"mix_weights must be in [0, 1], got {self.mix_weights}")
        if self.request_prior_weights and self.task == "next_item":
            raise ValueError("request_prior_weights is a request task option (task request or request_history)")
        if any(not w > 0 for w in self.request_prior_weights):
            raise ValueError(f"request_prior_weights must be > 0, got {self.request_prior_weights}")
        if self.part not in ("valid", "test"):
            raise ValueError(f"part must be 'valid' or 'test', got {self.part!r}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        self.num_beams = self.num_beams or auto_beams(max(self.ks))
        if self.num_beams < max(self.ks):
            raise ValueError(f"num_beams ({self.num_beams}) must be >= max(ks) ({max(self.ks)}); raise --num_beams")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 when set, got {self.max_examples}")
        if self.item_head_decode_weight is not None and self.item_head_decode_weight < 0:
            raise ValueError(f"item_head_decode_weight must be >= 0 when set, got {self.item_head_decode_weight}")
        if self.item_vector_prior_weight < 0:
            raise ValueError(f"item_vector_prior_weight must be >= 0, got {self.item_vector_prior_weight}")
        if self.item_vector_prior_weight and self.task != "next_item":
            raise ValueError(f"item_vector_prior_weight is a next_item decoding option; task {self.task} takes none")
        if self.decode_normaliser not in NORMALISERS:
            raise ValueError(f"decode_normaliser must be one of {list(NORMALISERS)}, got {self.decode_normaliser!r}")


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="Full-ranking Recall/NDCG@K of a trained model (+ popularity baseline).",
                              add_help=False)
    p.set_defaults(handler=_run_evaluate)
    try:
        from inference.cache.cli import register_cache_commands
    except ModuleNotFoundError as exc:  # inference/cache/cli.py not written yet; any other import error raises
        if exc.name != "inference.cache.cli":
            raise
        logger.debug("cache commands unavailable: %s", exc)
    else:
        register_cache_commands(subparsers)


def _run_evaluate(args, argv: list[str]) -> int:
    (cfg,) = parse_config([EvaluateConfig], argv)
    run_evaluate(cfg)
    return 0


def run_evaluate(cfg: EvaluateConfig, extra_recommenders: dict | None = None, text_vectors=None) -> dict:
    """Load the model and split, score the model (and the baselines), write metrics.json + metrics.md.

    ``extra_recommenders``: more ``recommend_fn``s (name -> fn) scored on the same examples, e.g. SASRec.
    ``text_vectors`` (``ItemEmbeddings``): the text retriever row's item vectors (``cfg.text_retriever_baseline``;
    None = encode them, ``inference.text_retriever.sentence_text_vectors``).
    ``cfg.task`` request / request_history: requests in words (``inference.requests.evaluate_requests``).
    On a split under the cold-item protocol every report gets the ``cold_items`` slice (``cold`` / ``warm``).
    """
    if text_vectors is not None and not cfg.text_retriever_baseline:
        raise ValueError("text_vectors are the text retriever row's; set text_retriever_baseline")
    if cfg.task != "next_item":
        if extra_recommenders:
            raise ValueError("extra_recommenders score next-item examples; the request tasks take none")
        from inference.requests import evaluate_requests

        return evaluate_requests(cfg)
    from inference.item_prior import load_item_prior
    from inference.scenarios import takes_scenarios
    from inference.text_retriever import TEXT_RETRIEVER_ROW, sentence_text_vectors, text_retriever_recommender
    from inference.trained_run import TrainedRun, check_item_head_override
    from recdata import SplitDataset
    from recdata.cold_items import items_without_training, uses_cold_protocol
    from recdata.errors import UserError
    from recdata.evaluation import (
        evaluate_recommender,
        evaluate_within_scenario,
        evaluation_sample,
        write_report,
    )
    from recdata.outputs import check_output_dir, claim_output_dir
    from recdata.popularity import popularity_recommender, train_popularity

    claim = {"output": cfg.out_dir, "command": "evaluate", "inputs": [cfg.model_dir, cfg.split_dir],
             "overwrite": cfg.overwrite}
    check_output_dir(**claim)  # refuse a folder we may not write before loading anything
    head_weight = check_item_head_override(cfg.model_dir, cfg.item_head_decode_weight)  # None = the run's own
    prior = load_item_prior(cfg.model_dir, cfg.item_vector_prior_weight, cfg.item_vectors, head_weight)  # {} at 0
    split = SplitDataset.load(cfg.split_dir)
    examples, sample = evaluation_sample(split.eval_examples(cfg.part), cfg.max_examples)
    catalogue = split.dataset.item_ids()
    popularity = train_popularity(split)
    run = TrainedRun.load(cfg.model_dir, device=cfg.device)
    run.item_tokenizer.check_catalogue(catalogue, cfg.model_dir, cfg.split_dir)
    max_k = max(cfg.ks)
    text_row = None
    if cfg.text_retriever_baseline:  # encoded (or checked) before the claim: a missing encoder leaves no folder
        vectors = text_vectors if text_vectors is not None else sentence_text_vectors(split, encoder_dir=cfg.encoder_dir)
        text_row = text_retriever_recommender(vectors, catalogue, max_k, cfg.exclude_history)
    claim_output_dir(**claim)  # claimed once the inputs are known good: a bad input leaves no empty folder
    scenario_kw = {}
    if split.has_scenarios:
        scenario_kw = {"scenario_items": split.scenario_catalogues(), "scenario_prompts": cfg.scenario_prompts,
                       "item_scenario": split.item_scenario()}
    elif cfg.scenario_prompts:
        raise UserError(f"--scenario_prompts: {cfg.split_dir} has no scenario labels; prepare it with scenario_column "
                        "or scenario_item_field")
    recommenders = {"alignrec": run.recommender(max_k, cfg.num_beams, cfg.exclude_history, cfg.batch_size,
                                                **scenario_kw, popularity_penalty=cfg.popularity_penalty,
                                                item_counts=popularity, item_head_weight=head_weight,
                                                decode_normaliser=cfg.decode_normaliser, **prior)}
    recommenders.update(extra_recommenders or {})
    if text_row is not None:
        recommenders[TEXT_RETRIEVER_ROW] = text_row
    if cfg.popularity_baseline:
        recommenders["popularity"] = popularity_recommender(split, max_k, cfg.exclude_history)
    cold = items_without_training(split) if uses_cold_protocol(split) else None  # the cold_items slice
    reports = {}
    for name, fn in recommenders.items():
        logger.info("evaluating %s on %d %s examples", name, len(examples), cfg.part)
        started = time.perf_counter()
        whole = not (cfg.scenario_prompts and name == "alignrec")  # scenario prompts need a target scenario
        reports[name] = (evaluate_recommender(fn, examples, cfg.ks, catalogue, popularity, cold_items=cold,
                                              batch_size=cfg.batch_size * 4) if whole else {"ks": sorted(cfg.ks)})
        if split.has_scenarios and cfg.within_scenario and takes_scenarios(fn):
            reports[name]["within_scenario"] = evaluate_within_scenario(
                fn, examples, scenario_kw["scenario_items"], cfg.ks, popularity, batch_size=cfg.batch_size * 4)
        seconds = time.perf_counter() - started
        reports[name]["timing"] = {"seconds": seconds, "users_per_second": len(examples) / seconds if seconds else None}
    decoding = describe_normaliser(cfg.decode_normaliser, len(run.item_tokenizer))  # what "auto" became
    json_path, md_path = write_report(reports, cfg.out_dir, title=f"{Path(cfg.model_dir).name} on {cfg.part}",
                                      extra={"config": config_to_dict(cfg), "sample": sample, NORMALISER_KEY: decoding})
    logger.info("wrote %s and %s", json_path, md_path)
    return reports
