"""``alignrec sasrec-tune``: choose the SASRec bar on the valid targets, one command, resumable.

    alignrec sasrec-tune --run_config configs/amazon_scientific.yaml --budget 40
    alignrec sasrec-tune --split_dir runs/x/data/split --out_dir bars/x --budget 15
    alignrec sasrec-tune --run_config my.yaml --budget 8 --space my_space.yaml   # your axes, in your order

Two searches on the valid targets only (the test part is never read): the plain SASRec over width, dropout,
learning rate, layers and weight decay, with ``sasrec_max_len`` = the split's ``max_history`` (the context every
evaluated history has), ``budget`` trainings; then the content SASRec (the same point + a learned projection of
the item text vectors our tokenizer reads) over its adaptor's knobs, ``content_budget`` trainings. Writes
trials.jsonl / content_trials.jsonl (a rerun resumes), trials.md (the grid with its valid scores) and tuned.yaml:
the two chosen points as the ``evaluate.sasrec_tuned`` / ``evaluate.sasrec_content`` blocks of a run config.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["SASRecTuneConfig", "load_space", "register", "run_tune"]

# The embeddings keys that decide the text vectors (the content row reads what the tokenizer reads).
TEXT_KEYS = ("text_encoder", "sentence_encoder_dir", "llm_dir", "text_template", "text_max_length", "text_batch_size",
             "text_device", "cache_dir", "use_cache")


@dataclass
class SASRecTuneConfig:
    """Test-blind tuning of the SASRec bar (plain and content) on one split."""

    run_config: str = field(default="", metadata={"help": "A pipeline YAML: tune on its data stage's split (run "
                                                          "first if missing) with its embeddings section's text "
                                                          "settings; out_dir defaults to <run dir>/sasrec_tune."})
    split_dir: str = field(default="", metadata={"help": "Or a saved split folder (`alignrec data prepare`)."})
    out_dir: str = field(default="", metadata={"help": "Output folder (trials, tuned.yaml); a rerun resumes."})
    budget: int = field(default=40, metadata={"help": "Plain SASRec trainings (>= the validation points the "
                                                      "recipe it is compared with got)."})
    content_budget: int = field(default=6, metadata={"help": "Content SASRec trainings from the tuned point "
                                                             "(0 = no content row)."})
    patience: int = field(default=5, metadata={"help": "Early-stopping patience (epochs) of every trial."})
    max_epochs: int = field(default=200, metadata={"help": "Epoch cap of every trial."})
    seed: int = field(default=42, metadata={"help": "SASRec seed of every trial and of the random phase."})
    device: str = field(default="cpu", metadata={"help": "torch device of the trials."})
    text_encoder: str = field(default="sentence", metadata={"help": "split_dir mode: text encoder of the content "
                                                                    "row ('sentence' = MiniLM, 'llm')."})
    text_max_length: int = field(default=64, metadata={"help": "split_dir mode: token limit per item text."})
    space: str = field(default="", metadata={"help": "YAML of SASRec axes (sasrec_key: [values]) searched in file "
                                                     "order, from the library default; default: width, dropout, "
                                                     "lr, layers, weight decay (alignrec.recommenders.tuning)."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not "
                                                             "create."})

    def __post_init__(self) -> None:
        if bool(self.run_config) == bool(self.split_dir):
            raise ValueError("give exactly one of --run_config (a pipeline YAML) or --split_dir")
        if self.split_dir and not self.out_dir:
            raise ValueError("--split_dir needs --out_dir")
        if self.budget < 1 or self.content_budget < 0 or self.patience < 1 or self.max_epochs < 1:
            raise ValueError("budget, patience and max_epochs must be >= 1, content_budget >= 0")


def register(subparsers) -> None:
    p = subparsers.add_parser("sasrec-tune", help="Choose the SASRec bar (plain + content) on the valid targets "
                                                  "(resumable).", add_help=False)
    p.set_defaults(handler=_run_tune)


def _run_tune(args, argv) -> int:
    from recdata.config import parse_config

    (cfg,) = parse_config([SASRecTuneConfig], argv)
    run_tune(cfg)
    return 0


def _inputs(cfg: SASRecTuneConfig) -> tuple[Any, Any, Path]:
    """(split, EmbeddingConfig of the text vectors, output folder)."""
    from alignrec.pipeline import load_run_config, run_pipeline
    from recdata.split import SplitDataset
    from tokenization.embeddings import EmbeddingConfig

    if cfg.split_dir:
        text = EmbeddingConfig(source="text", text_encoder=cfg.text_encoder, text_max_length=cfg.text_max_length)
        return SplitDataset.load(cfg.split_dir), text, Path(cfg.out_dir)
    if not Path(cfg.run_config).is_file():
        from recdata.errors import ConfigError

        raise ConfigError(f"--run_config {cfg.run_config} does not exist; pass a pipeline YAML (e.g. configs/*.yaml)")
    run_cfg = load_run_config(cfg.run_config)
    run_pipeline(run_cfg, until="data")
    section = run_cfg.sections.get("embeddings", {})
    text = EmbeddingConfig(source="text", **{k: v for k, v in section.items() if k in TEXT_KEYS})
    out = Path(cfg.out_dir) if cfg.out_dir else run_cfg.run_dir / "sasrec_tune"
    return SplitDataset.load(run_cfg.run_dir / "data" / "split"), text, out


def run_tune(cfg: SASRecTuneConfig) -> dict[str, Any]:
    """Library-callable body of ``alignrec sasrec-tune``: both searches, then tuned.yaml + trials.md."""
    import yaml

    from alignrec.recommenders import SASRecConfig
    from alignrec.recommenders.bar import CONTENT_DEFAULTS, CONTENT_SPACE, train_bar
    from alignrec.recommenders.tuning import SASREC_SPACE, check_resumable, coordinate_search
    from recdata.io import atomic_write_json, atomic_write_text
    from recdata.outputs import claim_output_dir
    from tokenization.embeddings import text_embeddings

    split, text_cfg, out = _inputs(cfg)
    defaults = SASRecConfig()
    fixed = {"sasrec_max_len": split.max_history, "sasrec_patience": cfg.patience, "sasrec_epochs": cfg.max_epochs,
             "sasrec_heads": defaults.sasrec_heads, "sasrec_batch_size": defaults.sasrec_batch_size}
    space = load_space(cfg.space, fixed) if cfg.space else SASREC_SPACE  # refused before the folder is claimed
    out = claim_output_dir(out, "sasrec-tune", inputs=[cfg.split_dir or None], overwrite=cfg.overwrite)
    # every built-in axis in the point too, so the same point has the same trial key under any space
    start = {**{axis: getattr(defaults, axis) for axis in dict.fromkeys([*SASREC_SPACE, *space])}, **fixed}
    # A trial's key holds every SASRec key it trained with, so points stay valid across budgets and spaces: only
    # another split or seed makes them another search.
    identity = {"split": split.dataset.fingerprint(), "max_history": split.max_history, "seed": cfg.seed}
    check_resumable(out / "tune_config.json", identity)
    record = {**dataclasses.asdict(cfg), **identity, "start": start, "space": space, "content_space": CONTENT_SPACE,
              "valid_users": len(split.eval_examples("valid"))}
    record["invocations"] = invocations(out, cfg, space)
    atomic_write_json(out / "tune_config.json", record)

    def trial(text=None):
        def evaluate(params: dict[str, Any]) -> dict[str, Any]:
            model = train_bar(split, {**params, "sasrec_device": cfg.device}, seed=cfg.seed, text=text)
            info = model.train_info
            return {"score": float(info["best_valid_ndcg@10"]), "epochs": int(info["epochs"]),
                    "seconds": round(float(info["seconds"]), 1), "torch_threads": int(info["torch_threads"])}
        return evaluate

    plain = coordinate_search(space, start, trial(), cfg.budget, out / "trials.jsonl", seed=cfg.seed)
    chosen = {"sasrec_tuned": plain["best"]["params"]}
    content = None
    if cfg.content_budget:
        vectors = text_embeddings(text_cfg, split)
        content = coordinate_search(CONTENT_SPACE, {**plain["best"]["params"], **CONTENT_DEFAULTS},
                                    trial((list(vectors.item_ids), vectors.vectors)), cfg.content_budget,
                                    out / "content_trials.jsonl", seed=cfg.seed)
        chosen["sasrec_content"] = content["best"]["params"]
    header = (f"# alignrec sasrec-tune: chosen on the {len(split.eval_examples('valid'))} valid targets "
              f"(seed {cfg.seed}; {len(plain['trials'])} plain + {len(content['trials']) if content else 0} content "
              "trainings).\n# Paste into the run config's evaluate section; test was never read.\n")
    atomic_write_text(out / "tuned.yaml", header + yaml.safe_dump(chosen, sort_keys=False))
    atomic_write_text(out / "trials.md", trials_markdown(plain, content, space))
    summary = {"sasrec_tuned": plain["best"], "sasrec_content": content["best"] if content else None,
               "trials": len(plain["trials"]), "content_trials": len(content["trials"]) if content else 0}
    atomic_write_json(out / "summary.json", summary)
    logger.info("sasrec tune: plain valid NDCG@10 %.4f %s%s -> %s", plain["best"]["score"], plain["best"]["params"],
                f"; content {content['best']['score']:.4f}" if content else "", out / "tuned.yaml")
    return summary


def invocations(out: Path, cfg: SASRecTuneConfig, space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every run of the search in ``out``, this one last: a resumed search may change its budget or space, and the
    top-level record holds only the latest, so which trials each run added (``trials_before``) would be lost."""
    import json

    from alignrec.recommenders.tuning import read_trials

    path = out / "tune_config.json"
    before = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    runs = list(before.get("invocations", []))
    if before and not runs:  # recorded before invocations were kept: its one record stands for the earlier runs
        runs.append({k: before.get(k) for k in ("budget", "content_budget", "space")})
    done = [len(read_trials(out / name)) if (out / name).is_file() else 0
            for name in ("trials.jsonl", "content_trials.jsonl")]
    runs.append({"budget": cfg.budget, "content_budget": cfg.content_budget, "space": space,
                 "trials_before": done[0], "content_trials_before": done[1]})
    return runs


def load_space(path: str, fixed: dict[str, Any]) -> dict[str, list[Any]]:
    """``--space``: SASRec axes in search order; a bad file, key or value is one ConfigError naming the file."""
    from alignrec.recommenders import SASRecConfig
    from alignrec.recommenders.bar import bar_sasrec_config
    from recdata.config import load_yaml
    from recdata.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"--space {path} does not exist; pass a YAML of SASRec axes (sasrec_key: [values])")
    space = load_yaml(path)
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: a search space is a non-empty mapping of sasrec_key: [values]")
    fields = {f.name for f in dataclasses.fields(SASRecConfig)}
    for axis, values in space.items():
        if axis not in fields or axis in fixed or axis in ("sasrec_device", "sasrec_seed"):
            settable = sorted(fields - set(fixed) - {"sasrec_device", "sasrec_seed"})
            raise ConfigError(f"{path}: axis {axis!r} is not a tunable SASRec key (max_len, epochs, patience and seed "
                              f"are fixed by the split and the flags); tunable: {settable}")
        if not isinstance(values, list) or not values or any(v is None for v in values):
            raise ConfigError(f"{path}: axis {axis!r}: give a non-empty list of values, got {values!r}")
        for value in values:
            bar_sasrec_config({axis: value})  # a value SASRec refuses is refused before any training
    return {str(axis): list(values) for axis, values in space.items()}


def trials_markdown(plain: dict[str, Any], content: dict[str, Any] | None,
                    space: dict[str, list[Any]] | None = None) -> str:
    """The grids with their valid scores, in trial order; the chosen rows marked."""
    from alignrec.recommenders.bar import CONTENT_SPACE
    from alignrec.recommenders.tuning import SASREC_SPACE

    axes = list(dict.fromkeys([*SASREC_SPACE, *(space or {})]))
    lines = []
    for title, search, columns in (("SASRec", plain, axes), ("SASRec + content", content, axes + list(CONTENT_SPACE))):
        if search is None:
            continue
        n = len(search["trials"])
        lines += [f"## {title} (valid NDCG@10, {n} training{'' if n == 1 else 's'})", "",
                  "| # | " + " | ".join(a.removeprefix("sasrec_") for a in columns) + " | valid NDCG@10 | epochs | s |",
                  "|" + "---|" * (len(columns) + 4)]
        for t in search["trials"]:
            mark = " (chosen)" if t["key"] == search["best"]["key"] else ""
            lines.append(f"| {t['index'] + 1} | " + " | ".join(str(t["params"].get(a)) for a in columns)
                         + f" | {t['score']:.4f}{mark} | {t.get('epochs', '-')} | {t.get('seconds', '-')} |")
        lines.append("")
    return "\n".join(lines)
