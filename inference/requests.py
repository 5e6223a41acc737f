"""``alignrec evaluate --task request | request_history``: requests in words, scored with Recall/NDCG@K.

Each request row (``sft_tasks.load_requests``) names a valid / test target. The examples handed to
``recdata.evaluation.evaluate_recommender`` carry the request id in ``user_id`` (so every ``recommend_fn`` looks
its request up by id), an empty history in the ``request`` mode and the user's history in ``request_history``.
Rows: the trained run asked with ``sft_tasks.request_prompt`` (query2item's prompt in the run's format, the
history's codes in front), a MiniLM retriever (cosine between the request's and the items' sentence vectors;
with history, the request vector mixed with the mean history item vector, the weight chosen on the valid
requests; ``TextRetriever``, whose history-only mode is the next-item "text retriever" row,
``inference.text_retriever``) and popularity. With ``request_prior_weights``, one more row, ``alignrec + request
prior``: the same decoding with the request's sentence vector (the retriever's) as a content prior in the run's
item head (``inference.item_prior``; weight x cosine with each item's text vector added to the head's logits), so
the words are read by the sentence encoder and the history and codes by the model; its weight is chosen on the
valid requests by NDCG@10 (each weight decodes them once), never on test. Before anything is scored, the requests
are checked against the training rows of the tasks build the run trained on (``tasks_dir``): a request found
there is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PRIOR_ROW", "REQUEST_TASKS", "RETRIEVER_ROW", "check_request_prior", "evaluate_requests",
           "llm_request_recommender", "minilm_retriever", "request_examples"]

REQUEST_TASKS = ("request", "request_history")
RETRIEVER_ROW = "minilm retriever"
PRIOR_ROW = "alignrec + request prior"
CHOICE_METRIC = "ndcg@10"  # the valid metric the retriever's mix weight and the request prior's weight are chosen by
EXAMPLE_FEATURES = datasets.Features({"user_id": datasets.Value("string"),
                                      "history": datasets.Sequence(datasets.Value("string")),
                                      "target": datasets.Value("string")})


def request_examples(rows: Sequence[Mapping[str, Any]], part: str, with_history: bool) -> datasets.Dataset:
    """``(user_id = request_id, history, target)`` of ``part``'s requests (history empty unless ``with_history``)."""
    picked = [r for r in rows if r["part"] == part]
    return datasets.Dataset.from_dict({"user_id": [r["request_id"] for r in picked],
                                       "history": [list(r["history"]) if with_history else [] for r in picked],
                                       "target": [r["target"] for r in picked]}, features=EXAMPLE_FEATURES)


def llm_request_recommender(run: Any, requests: Mapping[str, str], k: int, num_beams: int, with_history: bool,
                            exclude_history: bool = True, batch_size: int = 8,
                            item_head_weight: float | None = None, normaliser: str = "auto",
                            prior_weight: float = 0.0, retriever: Any = None) -> Any:
    """``recommend_fn(request_ids, histories)`` over a ``TrainedRun``: trie-constrained beams from the request
    prompt (``sft_tasks.request_prompt``), with the run's item head (``item_head_weight`` None = the run's own
    decoding weight, a value overrides it); history items excluded when asked; ``normaliser``: the evaluate
    section's ``decode_normaliser``. ``prior_weight`` > 0: the request's vector in ``retriever`` (a
    ``TextRetriever`` holding every request) is a content prior in the item head against the retriever's item
    vectors (needs an item head decoded with weight > 0)."""
    from inference.recommender import build_item_trie, recommend
    from sft_tasks import request_prompt

    trie = build_item_trie(run.item_tokenizer, run.hf_tokenizer)
    head_weight = run.item_head_weight if item_head_weight is None else item_head_weight
    prior = _request_prior(run, trie, prior_weight, retriever, head_weight) if prior_weight else None

    def fn(request_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> list[list[tuple[str, float]]]:
        prompts = [request_prompt(requests[r], run.hf_tokenizer, run.prompt_format,
                                  history=list(h) if with_history else None, item_tokenizer=run.item_tokenizer)
                   for r, h in zip(request_ids, histories, strict=True)]
        queries = None if prior is None else np.stack([retriever.requests[str(r)] for r in request_ids])
        return recommend(run.model, run.hf_tokenizer, run.item_tokenizer, prompts, k, num_beams,
                         exclude=[list(h) for h in histories] if exclude_history else None, batch_size=batch_size,
                         trie=trie, item_head_weight=head_weight, normaliser=normaliser, item_prior=prior,
                         prior_queries=queries)

    return fn


def _request_prior(run: Any, trie: Any, weight: float, retriever: Any, head_weight: float) -> Any:
    """The item head's content prior over the retriever's item vectors, for request vectors as queries."""
    from inference.item_prior import ItemVectorPrior
    from recdata.item_vectors import ItemEmbeddings

    if retriever is None or not head_weight:
        raise ValueError("a request prior needs the retriever's vectors and an item head decoded with weight > 0")
    vectors = ItemEmbeddings(list(retriever.item_ids), retriever.items)
    return ItemVectorPrior(trie, list(run.item_tokenizer.item_ids), vectors, weight,
                           device=next(run.model.parameters()).device, source="the retriever's item vectors")


def check_request_prior(model_dir: str | Path, head_weight: float | None) -> None:
    """Refuse (one line) ``request_prior_weights`` on a run the prior cannot act on: no item head, or a head decoded
    with weight 0 (``head_weight``: the override, None = the run's own)."""
    from recdata.errors import ConfigError
    from trainer import has_item_head, read_item_head_weight

    if not has_item_head(model_dir):
        raise ConfigError(f"request_prior_weights: {model_dir} was trained without an item head (train."
                          "item_head_weight 0), so there is no head to put the request prior in; drop the key")
    if not (read_item_head_weight(model_dir) if head_weight is None else head_weight):
        raise ConfigError("request_prior_weights act through the item head, which decodes with weight 0 here; set "
                          "item_head_decode_weight > 0 or drop the key")


def minilm_retriever(split: Any, rows: Sequence[Mapping[str, Any]], encoder_dir: str | Path = "",
                     device: str = "cpu") -> Any:
    """``TextRetriever`` over MiniLM vectors of every catalogue item's text and of every request."""
    from alignrec.llm.text_encoders import encode_sentence
    from alignrec.recommenders.request_retriever import TextRetriever
    from recdata.paths import default_sentence_encoder_dir
    from sft_tasks import item_text

    model_dir = Path(encoder_dir) if encoder_dir else default_sentence_encoder_dir()
    catalogue = split.dataset.item_ids()
    table = split.dataset.item_table()
    fields = ["title", "brand", "categories", "description"]
    item_vectors = encode_sentence([item_text(table[i], fields, 48) for i in catalogue], model_dir, device=device)
    request_vectors = encode_sentence([r["request"] for r in rows], model_dir, device=device)
    return TextRetriever(catalogue, item_vectors, {r["request_id"]: v for r, v in zip(rows, request_vectors,
                                                                                          strict=True)})


def evaluate_requests(cfg: Any) -> dict[str, Any]:
    """The request task of ``alignrec evaluate`` (``cfg``: ``inference.cli.EvaluateConfig``); writes metrics.json / .md."""
    from alignrec.recommenders.request_retriever import choose_mix_weight
    from inference.decode_normaliser import NORMALISER_KEY, describe_normaliser
    from inference.trained_run import TrainedRun, check_item_head_override
    from recdata import SplitDataset
    from recdata.config import config_to_dict
    from recdata.errors import UserError
    from recdata.evaluation import choose_on_valid, evaluate_recommender, evaluation_sample, write_report
    from recdata.outputs import claim_output_dir
    from recdata.popularity import popularity_recommender, train_popularity
    from sft_tasks import check_requests_unseen, load_requests

    head_weight = check_item_head_override(cfg.model_dir, cfg.item_head_decode_weight)  # before the folder is claimed
    if cfg.request_prior_weights:
        check_request_prior(cfg.model_dir, head_weight)
    claim_output_dir(cfg.out_dir, "evaluate", inputs=[cfg.model_dir, cfg.split_dir, cfg.requests_file, cfg.tasks_dir],
                     overwrite=cfg.overwrite)
    split = SplitDataset.load(cfg.split_dir)
    catalogue = split.dataset.item_ids()
    rows = load_requests(cfg.requests_file, catalogue)
    train = datasets.load_from_disk(cfg.tasks_dir)["train"]
    check_requests_unseen(rows, train["prompt"], cfg.tasks_dir)  # refuses a request the model was trained on
    with_history = cfg.task == "request_history"
    examples = request_examples(rows, cfg.part, with_history)
    if len(examples) == 0:
        raise UserError(f"{cfg.requests_file} holds no {cfg.part} request; write it with `alignrec tasks requests`")
    examples, sample = evaluation_sample(examples, cfg.max_examples)
    popularity, max_k = train_popularity(split), max(cfg.ks)
    run = TrainedRun.load(cfg.model_dir, device=cfg.device)
    run.item_tokenizer.check_catalogue(catalogue, cfg.model_dir, cfg.split_dir)
    recommenders = {"alignrec": llm_request_recommender(run, {r["request_id"]: r["request"] for r in rows}, max_k,
                                                        cfg.num_beams, with_history, cfg.exclude_history,
                                                        cfg.batch_size, head_weight, cfg.decode_normaliser)}
    extra: dict[str, Any] = {"config": config_to_dict(cfg), "requests": len(examples), "sample": sample,
                             NORMALISER_KEY: describe_normaliser(cfg.decode_normaliser, len(run.item_tokenizer))}
    retriever = minilm_retriever(split, rows, cfg.encoder_dir) if (cfg.retriever_baseline or
                                                                    cfg.request_prior_weights) else None
    if cfg.request_prior_weights:
        def with_prior(weight: float) -> Any:
            return llm_request_recommender(run, {r["request_id"]: r["request"] for r in rows}, max_k, cfg.num_beams,
                                           with_history, cfg.exclude_history, cfg.batch_size, head_weight,
                                           cfg.decode_normaliser, prior_weight=weight, retriever=retriever)

        prior_weight, table = cfg.request_prior_weights[0], {}
        if len(cfg.request_prior_weights) > 1:
            valid = request_examples(rows, "valid", with_history)
            if len(valid) == 0:
                raise UserError(f"{cfg.requests_file} holds no valid request to choose the request prior's weight on")
            prior_weight, table = choose_on_valid(with_prior, valid, cfg.request_prior_weights, catalogue,
                                                  CHOICE_METRIC, cfg.batch_size * 4)
        extra["request_prior"] = {"weight": prior_weight, f"valid_{CHOICE_METRIC}_by_weight": table}
        recommenders[PRIOR_ROW] = with_prior(prior_weight)
    if cfg.retriever_baseline:
        weight, table = 0.0, {}
        if with_history:
            valid = request_examples(rows, "valid", True)
            if len(valid) == 0:
                raise UserError(f"{cfg.requests_file} holds no valid request to choose the retriever's mix weight on")
            weight, table = choose_mix_weight(retriever, valid, cfg.mix_weights, catalogue, CHOICE_METRIC,
                                              exclude_history=cfg.exclude_history)
        extra["retriever"] = {"mix_weight": weight, f"valid_{CHOICE_METRIC}_by_weight": table}
        recommenders[RETRIEVER_ROW] = retriever.recommend_fn(max_k, weight, cfg.exclude_history)
    if cfg.popularity_baseline:
        recommenders["popularity"] = popularity_recommender(split, max_k, cfg.exclude_history)
    reports = {name: evaluate_recommender(fn, examples, cfg.ks, catalogue, popularity, batch_size=cfg.batch_size * 4)
               for name, fn in recommenders.items()}
    write_report(reports, cfg.out_dir, extra=extra,
                 title=f"{Path(cfg.model_dir).name}: {cfg.task} on {cfg.part} ({len(examples)} requests)")
    return reports
