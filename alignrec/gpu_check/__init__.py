"""``scripts/gpu_check.sh``: prove the real-scale path on one GPU machine without network in ~5 minutes.

``prepare`` (here, CPU) builds split + ItemTokenizer + tasks and bundles them with wheels and the model into
chunks that fit the transfer limit; ``check`` (there) assembles, installs, trains, evaluates and benchmarks;
``dry_run`` does both on CPU with a tiny model (the test suite runs it).
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "assemble": "alignrec.gpu_check.bundle",
    "write_bundle": "alignrec.gpu_check.bundle",
    "wheels_to_bring": "alignrec.gpu_check.bundle",
    "prepare": "alignrec.gpu_check.prepare",
    "run_check": "alignrec.gpu_check.check",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
