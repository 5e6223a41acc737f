"""Per-scenario rows on a multi-scenario dataset: popularity, one SASRec on all data, one SASRec per scenario, the
multi-scenario backbone (SASRec encoder + per-scenario towers) and the backbone + LLM4MSR meta layers.

    flock /tmp/alignrec-cpu.lock python scripts/bench_scenarios.py \
        --path ../shared/datasets/amazon-food-kitchen --scenario_item_field domain --kcore 5

The ``llm4msr`` row reads ``--vectors_dir``: ``alignrec scenarios extract`` + ``alignrec knowledge encode`` run on
the split this script keeps under ``bench_results/split_<hash>/`` (its path is logged); see the README section
"Multi-scenario: LLM4MSR".

Leave-one-out on each user's merged sequence, test targets, full ranking, ``exclude_history`` for every row.
Two rankings, labelled: ``whole_catalogue`` (the recommender ranks every item) and ``within_scenario`` (it is
asked for the target's scenario's items only). A per-scenario SASRec ranks only its own scenario, so it has the
``within_scenario`` rows only. Prints the Markdown table and writes JSON + Markdown under ``bench_results/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from alignrec.llm4msr import ROW_NAMES, recommend_fn_for, train_scenario_model  # noqa: E402
from alignrec.recommenders import SASRecConfig, as_recommend_fn, train_sasrec  # noqa: E402
from inference.scenarios import scenario_router  # noqa: E402
from recdata import DataConfig, SplitDataset, config_to_dict, prepare_dataset, sha256_json  # noqa: E402
from recdata.evaluation import (  # noqa: E402
    evaluate_recommender,
    evaluate_within_scenario,
    render_scenario_table,
    scenario_dataset_sentence,
)
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.popularity import popularity_recommender, train_popularity  # noqa: E402

KS = (1, 5, 10, 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--scenario_item_field", default="domain")
    parser.add_argument("--scenario_column", default="")
    parser.add_argument("--kcore", type=int, default=5)
    parser.add_argument("--rows", default="popularity,sasrec_all,sasrec_per_scenario",
                        help="comma-separated: popularity, sasrec_all, sasrec_per_scenario, backbone, llm4msr")
    parser.add_argument("--vectors_dir", default="", help="llm4msr row: `alignrec knowledge encode` output of "
                                                          "`alignrec scenarios extract` on this script's split")
    parser.add_argument("--knowledge_dir", default="", help="llm4msr row: the extract folder (its cost.json is "
                                                            "reported beside the row)")
    parser.add_argument("--print_split", action="store_true",
                        help="prepare (or load) the split, print its folder and exit (the LLM4MSR extract reads it)")
    parser.add_argument("--meta_rank", type=int, default=4)
    parser.add_argument("--meta_hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_results/scenarios.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("bench_scenarios")
    torch.set_num_threads(args.threads)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]

    t0 = time.perf_counter()
    cfg = DataConfig(path=args.path, scenario_item_field=args.scenario_item_field,
                     scenario_column=args.scenario_column, kcore=args.kcore)
    # the prepared split is kept under bench_results/ (keyed by the data config), so reruns skip the k-core
    cached = Path("bench_results") / f"split_{sha256_json(config_to_dict(cfg))[:12]}"
    if (cached / "split.json").is_file():
        split = SplitDataset.load(cached)
    else:
        split = prepare_dataset(cfg)
        split.save(cached)
    logger.info("split: %s", cached)
    if args.print_split:
        print(cached)
        return 0
    stats = split.dataset.stats()
    test = split.eval_examples("test")
    catalogue = split.dataset.item_ids()
    catalogues = split.scenario_catalogues()
    popularity = train_popularity(split)
    seconds: dict[str, float] = {"data": time.perf_counter() - t0}
    reports: dict[str, dict] = {}
    sasrec_cfg = SASRecConfig(sasrec_epochs=args.epochs, sasrec_patience=args.patience)
    pop_fn = popularity_recommender(split, k=max(KS), exclude_history=True)

    def write() -> str:
        """Results so far (after every row, so a job cut by its time limit still leaves its finished rows)."""
        table = render_scenario_table(reports, KS) if reports else ""
        header = f"# Per-scenario evaluation: {scenario_dataset_sentence(stats, args.kcore, len(test))}\n\n"
        rounded = {k: round(v, 1) for k, v in seconds.items()}
        markdown = header + table + "\nWall seconds: " + ", ".join(f"{k} {v}" for k, v in rounded.items()) + "\n"
        out = Path(args.out)
        slim = {name: {k: ({kk: vv for kk, vv in v.items() if kk != "per_user"} if k == "within_scenario" else v)
                       for k, v in rep.items() if k != "per_user"} for name, rep in reports.items()}
        atomic_write_json(out, {"args": vars(args), "stats": stats, "reports": slim, "seconds": rounded})
        atomic_write_text(out.with_suffix(".md"), markdown)
        return markdown

    def both(name: str, fn) -> None:
        start = time.perf_counter()
        rep = evaluate_recommender(fn, test, KS, catalogue, popularity, show_progress=False)
        rep["within_scenario"] = evaluate_within_scenario(fn, test, catalogues, KS, popularity, show_progress=False)
        reports[name] = rep
        seconds[f"{name}_eval"] = time.perf_counter() - start
        write()

    if "popularity" in rows:
        both("popularity", pop_fn)
    if "sasrec_all" in rows:
        start = time.perf_counter()
        model = train_sasrec(split, sasrec_cfg)
        seconds["sasrec_all_train"] = time.perf_counter() - start
        logger.info("SASRec on all data: %s", model.train_info)
        both("sasrec_all", as_recommend_fn(model, max(KS), exclude_history=True, scenario_items=catalogues))
        reports["sasrec_all"]["train_info"] = dict(model.train_info)
        write()
    if "sasrec_per_scenario" in rows:
        fns, info = {}, {}
        for scenario in split.scenario_names():
            start = time.perf_counter()
            model = train_sasrec(split.scenario_split(scenario), sasrec_cfg)
            seconds[f"sasrec_{scenario}_train"] = time.perf_counter() - start
            fns[scenario] = as_recommend_fn(model, max(KS), exclude_history=True)
            info[scenario] = dict(model.train_info)
            logger.info("per-scenario SASRec %s: %s", scenario, info[scenario])
        router = scenario_router(fns, catalogues, fallback=pop_fn)
        start = time.perf_counter()
        reports["sasrec_per_scenario"] = {
            "ks": list(KS), "train_info": info,
            "within_scenario": evaluate_within_scenario(router, test, catalogues, KS, popularity, show_progress=False),
        }
        seconds["sasrec_per_scenario_eval"] = time.perf_counter() - start
    for kind in ("backbone", "llm4msr"):  # the multi-scenario backbone without / with LLM4MSR meta layers
        if kind not in rows:
            continue
        start = time.perf_counter()
        model = train_scenario_model(kind, split, sasrec_cfg, args.vectors_dir, args.meta_rank, args.meta_hidden)
        seconds[f"{kind}_train"] = time.perf_counter() - start
        logger.info("%s: %s", ROW_NAMES[kind], model.train_info)
        both(ROW_NAMES[kind], recommend_fn_for(model, split, max(KS)))
        reports[ROW_NAMES[kind]]["train_info"] = dict(model.train_info)
        if kind == "llm4msr":
            cost = Path(args.knowledge_dir) / "cost.json"
            if args.knowledge_dir and cost.is_file():  # the LLM part's cost beside the row (calls, tokens, seconds)
                reports[ROW_NAMES[kind]]["llm_cost"] = json.loads(cost.read_text())
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
