"""Every shipped run config parses: no unknown keys in any section, values accepted by each stage's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignrec.pipeline.config import load_run_config, run_config_from_dict
from alignrec.pipeline.stages import validate_sections

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_run_config(path)
    validate_sections(cfg.sections, str(path))
    assert cfg.sections["data"]["path"] and "${" not in cfg.sections["data"]["path"]


@pytest.mark.parametrize("section, bad, match", [
    ("tokenizer", {"num_levls": 4}, "num_levls"),
    ("train", {"learning_rat": 1e-3}, "learning_rat"),
    ("tasks", {"output_dir": "x"}, "fills itself"),
    ("export", {"what": 1}, "takes no keys"),
])
def test_bad_sections_are_named(section, bad, match):
    cfg = run_config_from_dict({"name": "x", "data": {"path": "p"}, section: bad}, source="bad.yaml")
    with pytest.raises(ValueError, match=match):
        validate_sections(cfg.sections, cfg.source)


def test_unknown_top_level_key():
    with pytest.raises(ValueError, match="unknown top-level"):
        run_config_from_dict({"name": "x", "tokeniser": {}}, source="bad.yaml")
