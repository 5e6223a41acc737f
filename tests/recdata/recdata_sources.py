"""Tiny source files in every supported layout, written to tmp_path, all describing the same data:
users u1 (3 items), u2 (4 items, one timestamp tie), u3 (3 items); catalogue i1..i5 (i5 never used)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

# (user, item, timestamp, rating) in file order; u2 has a tie at t=20 (i4 written before i1)
LOG = [
    ("u1", "i1", 10, 5.0), ("u2", "i2", 5, 4.0), ("u1", "i2", 30, 3.0), ("u2", "i4", 20, 2.0),
    ("u1", "i3", 20, 4.0), ("u2", "i1", 20, 5.0), ("u3", "i3", 7, 1.0), ("u2", "i3", 40, 4.0),
    ("u3", "i2", 8, 5.0), ("u3", "i4", 9, 3.0),
]
# expected chronological sequences (stable sort by time, ties in file order)
EXPECTED = {"u1": ["i1", "i3", "i2"], "u2": ["i2", "i4", "i1", "i3"], "u3": ["i3", "i2", "i4"]}
EXPECTED_TS = {"u1": [10, 20, 30], "u2": [5, 20, 20, 40], "u3": [7, 8, 9]}
ITEMS = {
    "i1": {"title": "Pipette &amp; tips", "description": "Sterile", "brand": "LabCo", "categories": "Lab"},
    "i2": {"title": "Gloves", "description": "", "brand": "SafeHands", "categories": "Safety"},
    "i3": {"title": "Glasses", "description": "UV", "brand": "", "categories": "Safety"},
    "i4": {"title": "Scale", "description": "0.01 g", "brand": "WeighIt", "categories": "Lab"},
    "i5": {"title": "Unused", "description": "", "brand": "", "categories": ""},
}


def write_lcrec(folder: Path, name: str = "Tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter.json").write_text(json.dumps(EXPECTED, indent=1))
    (folder / f"{name}.item.json").write_text(json.dumps(ITEMS, indent=1))
    return folder


def write_recbole(folder: Path, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, t, r in LOG]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\t{v['title']}\t199{n}\t{v['categories']} Drama" for n, (i, v) in enumerate(ITEMS.items())]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n")
    return folder


def write_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, t, r in LOG).encode("latin-1"))
    movies = [f"{i}::{v['title']} (1995)::{v['categories']}|Drama" for i, v in ITEMS.items()]
    movies[1] = "i2::Amélie (2001)::Comedy|Romance"  # latin-1 byte
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    return folder


def write_amazon(folder: Path, gz: bool = True, python_literal_meta: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    reviews = "".join(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r}) + "\n"
                      for u, i, t, r in LOG)
    metas = []
    for i, v in ITEMS.items():
        rec = {"asin": i, "title": v["title"], "description": [v["description"], "more"] if v["description"] else [],
               "brand": v["brand"], "category": ["Industrial", v["categories"]]}
        metas.append(repr(rec) if python_literal_meta else json.dumps(rec))
    meta_text = "\n".join(metas) + "\n"
    if gz:
        with gzip.open(folder / "Tiny_5.json.gz", "wt") as f:
            f.write(reviews)
        with gzip.open(folder / "meta_Tiny.json.gz", "wt") as f:
            f.write(meta_text)
    else:
        (folder / "Tiny_5.json").write_text(reviews)
        (folder / "meta_Tiny.json").write_text(meta_text)
    return folder


def write_tabular(folder: Path, ext: str = "csv") -> Path:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    inter = pd.DataFrame(LOG, columns=["uid", "iid", "ts", "stars"])
    items = pd.DataFrame([{"item_id": i, "name": v["title"], "cats": v["categories"]} for i, v in ITEMS.items()])
    if ext == "parquet":
        inter.to_parquet(folder / "interactions.parquet")
        items.to_parquet(folder / "items.parquet")
    else:
        inter.to_csv(folder / "interactions.csv", index=False)
        items.to_csv(folder / "items.csv", index=False)
    return folder


TABULAR_OPTIONS = dict(user_column="uid", item_column="iid", time_column="ts", rating_column="stars",
                       item_text_fields="title=name,categories=cats,description=,brand=")
