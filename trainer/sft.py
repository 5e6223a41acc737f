"""Supervised fine-tuning of an LLM on the alignment tasks (LoRA, QLoRA or full; optional DeepSpeed).

Commands (config keys are the flags; flags win over the YAML; unknown keys raise):

    deepspeed trainer/sft.py --config CONFIG.yaml --deepspeed ds_configs/zero2.json
    deepspeed --num_gpus 4 trainer/sft.py --config CONFIG.yaml --deepspeed ds_configs/zero3.json
    torchrun --nproc_per_node 2 trainer/sft.py --config CONFIG.yaml
    python trainer/sft.py --config CONFIG.yaml [--deepspeed ds_configs/zero2.json]   # single process, CPU ok
    python trainer/sft.py --config CONFIG.yaml --resume_from_checkpoint last        # continue exactly

Minimal flags: --dataset_dir (sft_tasks DatasetDict) --item_tokenizer_dir --output_dir. See --help.

Layer: this script is an entry point (the top layer, with the CLI and the pipeline), not trainer library code:
the launcher runs it by path, and it is the one place of the SFT path that wires ``inference``'s ranking
validation into ``trainer.train.run_sft``. The import contract (pyproject.toml ``[tool.importlinter]``) lists
that one import as an entry-point exception; nothing else in ``trainer`` imports ``inference``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repo root, not trainer/ (its names shadow)
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from trainer.launch import is_main_process, prepare_launch


def main(argv: Sequence[str] | None = None) -> int:
    argv = prepare_launch(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from inference.ranking_validation import ranking_validation_callback  # entry point: see the docstring
    from trainer.config import parse_train_config
    from trainer.train import run_sft

    model_args, data_args, run_args, sft_args = parse_train_config(argv)
    run_sft(model_args, data_args, run_args, sft_args, ranking_validation=ranking_validation_callback)
    return 0


def run_main(argv: Sequence[str] | None = None) -> int:
    """``main`` as the ``alignrec train`` child: a user error (bad dataset_dir, read-only output) is ONE stderr line
    ``alignrec train: error: ...`` and exit 1/2 like every other command, not a traceback (``ALIGNREC_DEBUG=1``
    keeps it)."""
    import os

    from recdata.errors import UserError, cli_error_line

    try:
        return main(argv)
    except (UserError, OSError) as exc:
        line = cli_error_line(exc)
        if line is None or os.environ.get("ALIGNREC_DEBUG", "") not in ("", "0"):
            raise
        print(f"alignrec train: error: {line[0]}", file=sys.stderr, flush=True)
        return line[1]


if __name__ == "__main__":
    sys.exit(run_main())
