"""The ``data`` stage: load the dataset files, process them and split them (``alignrec data prepare``).

Reads: the ``data`` section (``DataConfig`` + ``PrepareArgs``) and the source files it names (their content enters
the key). Writes: ``split/`` (the ``SplitDataset``).
"""

from __future__ import annotations

from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    data_classes,
)


def _data_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The source files of the data stage (their content enters its key, see ``recdata.fingerprint``)."""
    return {"path": section.get("path", ""), "item_path": section.get("item_path", "")}


def run_data(ctx: StageContext) -> dict[str, Any]:
    from recdata.cli import run_prepare

    cfg, prep = build_section(data_classes(), ctx.config, {"output_dir": str(ctx.out_dir / "split")}, "data")
    stats = run_prepare(cfg, prep)
    return {"users": stats["users"], "items": stats["items"], "interactions": stats["interactions"],
            "split": stats["split"], "drops": stats["drops"]}


STAGE = Stage("data", run_data, (), inputs=_data_inputs)
