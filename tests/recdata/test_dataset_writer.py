"""save_dataset_rows writes what Dataset.from_dict(rows).save_to_disk writes: same files, same bytes, one
record batch of rows in memory."""

from __future__ import annotations

import json

import datasets
import pytest

from recdata.dataset_writer import save_dataset_dict_splits, save_dataset_rows

FEATURES = datasets.Features({"prompt": datasets.Value("string"), "history": datasets.Sequence(datasets.Value("string")),
                              "user_id": datasets.Value("string")})


def _rows(n: int) -> list[dict]:
    return [{"prompt": f"p{i} " + "x" * (i % 37), "history": [f"i{j}" for j in range(i % 5)], "user_id": f"u{i % 7}"}
            for i in range(n)]


def _files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize(("n", "max_shard_size"), [(0, None), (1, None), (2500, None), (2500, "20KB"),
                                                   (3001, "7KB"), (5, "1KB")])
def test_same_files_as_save_to_disk(tmp_path, n, max_shard_size):
    rows = _rows(n)
    expected = tmp_path / "expected"
    datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in FEATURES}, features=FEATURES).save_to_disk(
        str(expected), max_shard_size=max_shard_size)
    got = tmp_path / "got"
    assert save_dataset_rows(iter(rows), FEATURES, got, max_shard_size=max_shard_size) == n
    want, have = _files(expected), _files(got)
    assert sorted(want) == sorted(have)
    for name in want:
        if name == "state.json":  # from_dict draws a random fingerprint; so does the writer
            a, b = json.loads(want[name]), json.loads(have[name])
            assert a.pop("_fingerprint") != b.pop("_fingerprint") and a == b
        else:
            assert want[name] == have[name], name
    if n:
        assert datasets.load_from_disk(str(got)).to_list() == rows


def test_dataset_dict_folder_loads(tmp_path):
    save_dataset_rows(iter(_rows(3)), FEATURES, tmp_path / "train")
    save_dataset_rows(iter(_rows(2)), FEATURES, tmp_path / "validation")
    save_dataset_dict_splits(tmp_path, ["train", "validation"])
    expected = tmp_path / "expected"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows(1), features=FEATURES)}).save_to_disk(str(expected))
    loaded = datasets.load_from_disk(str(tmp_path))
    assert list(loaded) == ["train", "validation"] and loaded["validation"].to_list() == _rows(2)
    assert json.loads((expected / "dataset_dict.json").read_text())["splits"] == ["train"]


def test_rows_are_consumed_lazily(tmp_path):
    """The writer pulls rows as it writes: it never needs them all at once."""
    pulled = []

    def rows():
        for row in _rows(2500):
            pulled.append(1)
            yield row

    def tables():
        from recdata import dataset_writer

        return dataset_writer._tables(rows(), FEATURES.arrow_schema)

    it = tables()
    first = next(it)
    assert first.num_rows == 1000 and len(pulled) == 1000  # one record batch, not the 2,500 rows


def test_fingerprint_is_the_digest_of_the_whole_json():
    """RecDataset.fingerprint hashes each table's JSON slice by slice (a split's load holds one slice of Python
    values, 4,096 rows): the digest is the one of the whole JSON text, as before."""
    import hashlib

    from recdata.dataset import RecDataset

    n = 9_000  # three slices
    items = datasets.Dataset.from_dict({"item_id": ["a", "ç\"", "b"], "title": ["A", None, "Ü"],
                                        **{f: ["", "x", "é"] for f in ("description", "brand", "categories")}})
    sequences = datasets.Dataset.from_dict({
        "user_id": [f"u{i}" if i % 9 else f"ü{i}" for i in range(n)],
        "item_ids": [["a", "b"][: i % 3] for i in range(n)],
        "timestamps": [[i, i + 1][: i % 3] for i in range(n)],
        "score": [None if i % 5 == 0 else i / 7 for i in range(n)],
    })
    ds = RecDataset(items=items, sequences=sequences, name="fp")
    reference = hashlib.sha256(b"fp")
    for table in (items.data.table, sequences.data.table):
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        reference.update(json.dumps(columns, ensure_ascii=False, sort_keys=False).encode("utf-8"))
    assert ds.fingerprint() == reference.hexdigest()
