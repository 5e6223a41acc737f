"""Loaders for the supported on-disk layouts, each returning a ``RecDataset`` exactly as the files say.

``load_dataset(path, format="auto")`` detects the layout from the folder contents. Loaders never drop or
rewrite data silently: cleaning is ``recdata.processing``'s job, and the only loader-side drops (repeated
item records under ``duplicate_items=keep_first``, unreviewed Amazon meta records) are counted in ``drops``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recdata.dataset import RecDataset
from recdata.errors import InputFileError, UserError
from recdata.loaders.amazon_raw import load_amazon_raw
from recdata.loaders.common import LoadOptions
from recdata.loaders.lcrec_json import load_lcrec_json
from recdata.loaders.movielens import load_movielens
from recdata.loaders.recbole import load_recbole
from recdata.loaders.tabular import EXTENSIONS, load_tabular

LOADERS: dict[str, Callable[[Path, LoadOptions], RecDataset]] = {
    "lcrec_json": load_lcrec_json,
    "recbole": load_recbole,
    "amazon_raw": load_amazon_raw,
    "movielens": load_movielens,
    "tabular": load_tabular,
}
FORMATS = ("auto", "saved", *LOADERS)

ACCEPTED_LAYOUTS = """accepted layouts:
  lcrec_json  <Name>.inter.json + <Name>.item.json      (LC-Rec / LETTER)
  recbole     <Name>.inter + <Name>.item                (RecBole atomic files, e.g. ml-100k)
  amazon_raw  <Category>_5.json[.gz] + meta_<Category>.json[.gz]   (Amazon Reviews 2018/2014)
  movielens   ratings.dat + movies.dat                  (MovieLens 1M/10M)
  tabular     interactions.<csv|tsv|parquet> + items.<csv|tsv|parquet>, or a file + item_path
  saved       meta.json + items.parquet + sequences.parquet   (a saved RecDataset / SplitDataset)"""


def detect_format(path: str | Path) -> str:
    """The layout of ``path`` from its contents; ambiguous or unknown folders raise listing what was found."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    if path.is_file():
        if path.name.endswith(EXTENSIONS):
            return "tabular"
        raise UserError(f"{path} is a file of unknown type; pass a folder or a CSV/TSV/Parquet file.\n{ACCEPTED_LAYOUTS}")
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    checks = {
        "saved": "meta.json" in names and "sequences.parquet" in names,
        "lcrec_json": any(n.endswith(".inter.json") for n in names) and any(n.endswith(".item.json") for n in names),
        "recbole": any(n.endswith(".inter") for n in names) and any(n.endswith(".item") for n in names),
        "movielens": "ratings.dat" in names and "movies.dat" in names,
        "amazon_raw": any(n.startswith("meta_") and ".json" in n for n in names)
        and any(not n.startswith("meta_") and n.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz")) for n in names),
        "tabular": any(n.startswith("interactions.") for n in names) and any(n.startswith("items.") for n in names),
    }
    hits = [fmt for fmt, ok in checks.items() if ok]
    if len(hits) == 1:
        return hits[0]
    shown = names[:20] + (["..."] if len(names) > 20 else [])
    what = f"matches several layouts {hits}; set format explicitly" if hits else "matches no known layout"
    raise UserError(f"{path} {what}. Found: {shown}\n{ACCEPTED_LAYOUTS}")


def load_dataset(path: str | Path, format: str = "auto", options: LoadOptions | None = None) -> RecDataset:
    """Load ``path`` in ``format`` (``auto`` detects it); a saved dataset folder loads as saved."""
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose one of {list(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "saved":
        return RecDataset.load(path)
    return LOADERS[fmt](path, options or LoadOptions())


__all__ = [
    "ACCEPTED_LAYOUTS",
    "FORMATS",
    "LOADERS",
    "LoadOptions",
    "detect_format",
    "load_amazon_raw",
    "load_dataset",
    "load_lcrec_json",
    "load_movielens",
    "load_recbole",
    "load_tabular",
]
