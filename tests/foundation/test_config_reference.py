"""docs/reference/configuration.md is generated from the config dataclasses' help texts
(scripts/gen_config_reference.py); the committed page must equal a fresh generation, so it cannot go stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", REPO / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_configuration_reference_is_fresh() -> None:
    gen = _generator()
    fresh = gen.render()
    committed = gen.OUTPUT.read_text(encoding="utf-8")
    assert committed == fresh, (
        "docs/reference/configuration.md is stale (a config field, default or help text changed): "
        "run `python scripts/gen_config_reference.py` and commit the page"
    )


def test_reference_covers_every_pipeline_section() -> None:
    gen = _generator()
    from alignrec.pipeline.config import STAGE_NAMES

    text = gen.OUTPUT.read_text(encoding="utf-8")
    for section in STAGE_NAMES:
        assert f"{{#section-{section}}}" in text, f"section {section!r} of alignrec run is missing from the reference"
