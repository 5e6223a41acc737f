"""Deprecated alias (one release): the preference stage is ``alignrec.pipeline.stages.preference`` (one module per
stage). Import from there."""

from __future__ import annotations

import warnings

from alignrec.pipeline.stages.preference import run_preference_stage, validate_preference_section

__all__ = ["run_preference_stage", "validate_preference_section"]

warnings.warn("alignrec.pipeline.preference_stage moved to alignrec.pipeline.stages.preference; import it from there",
              DeprecationWarning, stacklevel=2)
