"""Write a synthetic catalogue + interaction log of any size (Parquet, the ``tabular`` layout our loaders read).

    .venv/bin/python scripts/make_synthetic.py --out_dir data/synth-1m --num_items 1000000 --num_users 1000000
    alignrec data prepare --path data/synth-1m --output_dir runs/data/synth-1m --keep_unused_items true

Zipf popularity, latent item clusters with template titles, a planted next-item structure (chains within a
cluster + cluster transitions) and optional scenarios (``--num_scenarios 3``; load with
``--scenario_item_field scenario``); streamed in blocks of users, seeded (same flags = same bytes). Every flag is a
``recdata.synthetic.SyntheticConfig`` field (``--help``). See docs/scale.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recdata.config import parse_config  # noqa: E402
from recdata.errors import UserError  # noqa: E402
from recdata.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402

logger = logging.getLogger("make_synthetic")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        (cfg,) = parse_config([SyntheticConfig], argv)
        manifest = generate_synthetic(cfg)
    except UserError as exc:
        print(f"make_synthetic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    logger.info("%s: %d items, %d users, %d interactions (manifest %s/synthetic.json)", cfg.out_dir,
                manifest["items"], manifest["users"], manifest["interactions"], cfg.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
