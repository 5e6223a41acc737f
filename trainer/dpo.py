"""Preference alignment (DPO, trl ``DPOTrainer``) of a finished SFT run on prompt/chosen/rejected pairs.

Commands (config keys are the flags; flags win over the YAML; unknown keys raise):

    deepspeed trainer/dpo.py --config CONFIG.yaml --deepspeed ds_configs/zero2.json
    torchrun --nproc_per_node 2 trainer/dpo.py --config CONFIG.yaml
    python trainer/dpo.py --sft_run_dir runs/X/train/model --pairs_dir PAIRS --output_dir OUT --beta 0.1
    python trainer/dpo.py --config CONFIG.yaml --resume_from_checkpoint last        # continue exactly

Minimal flags: --sft_run_dir (trainer/sft.py output) --pairs_dir (sft_tasks.preference pairs) --output_dir.
The reference model is the SFT run, frozen. See --help for every DPOConfig field (beta, loss_type, ...).

Layer: an entry point like trainer/sft.py (the top layer): it wires ``inference``'s ranking validation into
``trainer.dpo_run.run_dpo``; the import contract lists that one import as an entry-point exception.
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
    from trainer.dpo_config import parse_dpo_config
    from trainer.dpo_run import run_dpo

    pref_args, run_args, dpo_args = parse_dpo_config(argv)
    run_dpo(pref_args, run_args, dpo_args, ranking_validation=ranking_validation_callback)
    return 0


if __name__ == "__main__":
    sys.exit(main())
