"""``python -m alignrec.gpu_check {prepare,check,dry_run}`` (what scripts/gpu_check.sh runs)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "gpu_check.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="CPU: build split/tokenizer/tasks, bundle them with wheels + model")
    prep.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    prep.add_argument("--carry_dir", type=Path, default=REPO_ROOT / "gpu_carry")
    prep.add_argument("--python_version", default="", help="the GPU machine's Python, e.g. 3.12 (default: this one)")
    prep.add_argument("--skip_wheels", default="", help="comma-separated packages the GPU machine already has")
    prep.add_argument("--no_wheels", action="store_true", help="bring no wheels at all")
    prep.add_argument("--no_weights", action="store_true", help="no model file (then the check cannot train)")
    prep.add_argument("--chunk_mib", type=float, default=60.0, help="max MiB per chunk (the 64 MiB transfer limit minus the ~3 MiB working tree)")
    chk = sub.add_parser("check", help="GPU machine: assemble, install, train, evaluate, benchmark")
    chk.add_argument("--carry_dir", type=Path, default=REPO_ROOT / "gpu_carry")
    chk.add_argument("--out", type=Path, required=True, help="where gpu_check.json / gpu_check.md go ($OUT)")
    dry = sub.add_parser("dry_run", help="both on CPU with a tiny model and a few steps")
    dry.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dry.add_argument("--work_dir", type=Path, required=True)
    dry.add_argument("--chunk_mib", type=float, default=0.25, help="small, so reassembly of several chunks is exercised")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from recdata.errors import UserError

    try:
        if args.command == "prepare":
            from alignrec.gpu_check.prepare import prepare

            skip = tuple(s.strip() for s in args.skip_wheels.split(",") if s.strip())
            manifest = prepare(args.config, args.carry_dir, python_version=args.python_version, skip_wheels=skip,
                               no_wheels=args.no_wheels, no_weights=args.no_weights, chunk_mib=args.chunk_mib)
            folders = [c["folder"] for c in manifest["chunks"]]
            print(f"{len(folders)} transfer(s); each carries gpu_carry/manifest.json and one chunk folder:")
            for folder in folders:
                print(f"  carry [gpu_carry/manifest.json, gpu_carry/{folder}]  command: bash scripts/gpu_check.sh")
            return 0
        from alignrec.gpu_check.check import run_check

        if args.command == "check":
            return 0 if run_check(args.carry_dir, args.out) is not None else 3
        from alignrec.gpu_check.prepare import prepare

        carry = args.work_dir / "gpu_carry"
        prepare(args.config, carry, dry_run=True, no_wheels=True, chunk_mib=args.chunk_mib)
        return 0 if run_check(carry, args.work_dir / "out") is not None else 3
    except UserError as exc:
        print(f"gpu_check.sh {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
