"""``alignrec data stats`` / ``alignrec data prepare`` end to end through the real console entry point."""

from __future__ import annotations

import json
import re

from alignrec.cli import main
from recdata import SplitDataset
from recdata.prepare import DataConfig, load_and_process


def test_stats_table(tiny_sources, capsys):
    assert main(["data", "stats", str(tiny_sources["recbole"])]) == 0
    out = capsys.readouterr().out
    for key, value in [("users", "3"), ("items", "4"), ("interactions", "10"), ("density", "83.3333%"),
                       ("  html_unescaped_fields", "1"), ("  unused_items", "1")]:
        assert re.search(rf"^{key}\s+{value}$", out, re.M), (key, out)
    assert re.search(r"^  percentiles\s+min 3  p25 3  p50 3  p75 3.5  p90 3.8  p99 3.98  max 4$", out, re.M), out


def test_stats_json_matches_library(tiny_sources, capsys):
    folder = str(tiny_sources["amazon_raw"])
    assert main(["data", "stats", folder, "--json", "--kcore", "2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == json.loads(json.dumps(load_and_process(DataConfig(path=folder, kcore=2)).stats()))
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 10)
    assert stats["sequence_length"]["max"] == 4.0


def test_prepare_writes_loadable_split(tiny_sources, tmp_path, capsys):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"path: {tiny_sources['movielens']}\nmax_history: 2\nsplit: temporal\n")
    out = tmp_path / "prepared"
    assert main(["data", "prepare", "--config", str(cfg), "--output_dir", str(out), "--max_history", "3"]) == 0
    split = SplitDataset.load(out)
    assert (split.protocol, split.max_history) == ("temporal", 3)  # CLI flag wins over YAML
    stats = json.loads((out / "stats.json").read_text())
    assert stats["split"]["train_interactions"] == sum(len(s) for _, s in split.train_sequences())
    assert stats["split"]["test_examples"] == len(split.eval_examples("test"))
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["DataConfig"]["path"] == str(tiny_sources["movielens"])
    assert resolved["DataConfig"]["max_history"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]  # no temp folder left
    assert "train_interactions" in capsys.readouterr().out
    # stats on the prepared folder reads it as saved
    assert main(["data", "stats", str(out), "--json"]) == 0


def test_unknown_yaml_key_is_rejected(tiny_sources, tmp_path, capsys):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"path: {tiny_sources['lcrec_json']}\nk_core: 5\n")
    assert main(["data", "prepare", "--config", str(cfg), "--output_dir", str(tmp_path / "o")]) == 2  # a ConfigError
    assert "unknown config key(s) ['k_core']" in capsys.readouterr().err
