"""Launching a training entry (``trainer/sft.py``, ``trainer/dpo.py``) for a pipeline stage: one launch path for
the ``train`` and ``preference`` stages.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import StageContext
from alignrec.pipeline.sections import REPO_ROOT, check_injected
from recdata.errors import UserError

logger = logging.getLogger(__name__)


def launch_trainer(ctx: StageContext, stage: str, section: dict[str, Any], injected: dict[str, Any],
                   config_name: str, validate: Any, launcher: str, num_gpus: int, ds_config: str | None,
                   entry: Path | None = None) -> tuple[list[str], float, Path]:
    """Write the stage's trainer YAML, check it, launch the entry (resuming from its last checkpoint).

    One launch path for every training stage (SFT ``train``, DPO ``preference``): returns (command, seconds,
    config file). ``validate(argv)`` parses the config so a typo fails before a launcher starts.
    """
    import yaml

    from trainer.cli import build_command
    from trainer.launch import run_child

    check_injected(stage, section, injected)
    config_file = ctx.out_dir / config_name
    config_file.write_text(yaml.safe_dump({**section, **injected}, sort_keys=True))
    args = ["--config", str(config_file)]
    if ds_config:
        ds_path = Path(ds_config)
        args += ["--deepspeed", str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)]
    if any((Path(injected["output_dir"])).glob("checkpoint-*/trainer_state.json")):  # a complete checkpoint
        logger.info("%s: resuming from the last checkpoint in %s", stage, injected["output_dir"])
        args += ["--resume_from_checkpoint", "last"]
    validate(["--config", str(config_file)])
    cmd = build_command(launcher, num_gpus, args, **({"entry": entry} if entry else {}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    logger.info("launching %s: %s", stage, " ".join(cmd))
    started = time.time()
    code = run_child(cmd, env=env, cwd=str(REPO_ROOT))  # dies with this process (kill -9, Ctrl-C included)
    if code in (130, 143):
        raise KeyboardInterrupt  # stopped by Ctrl-C / SIGTERM: the run folder resumes on the next run
    if code != 0:
        raise UserError(f"{stage} training exited with status {code}; see the log above (command: {' '.join(cmd)})")
    return cmd, time.time() - started, config_file
