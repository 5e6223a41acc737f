#!/usr/bin/env bash
# GPU check of the real-scale path (SmolLM2 LoRA bf16 on amazon18-scientific, ~5 min of GPU work).
#   bash scripts/gpu_check.sh prepare [--python_version 3.12] [--skip_wheels pyarrow,pandas]   # here, CPU
#   bash scripts/gpu_check.sh                      # on the GPU machine, once per transferred chunk (idempotent)
#   bash scripts/gpu_check.sh --dry_run [WORK_DIR] # CPU, tiny model, a few steps (the test suite runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
case "${1:-check}" in
  prepare) shift; exec "$PY" -m alignrec.gpu_check prepare "$@" ;;
  --dry_run) shift; exec "$PY" -m alignrec.gpu_check dry_run --work_dir "${1:-$(mktemp -d)}" ;;
  check) [ $# -gt 0 ] && shift
         exec "$PY" -m alignrec.gpu_check check --out "${OUT:-gpu_check_out}" "$@" ;;
  *) echo "usage: gpu_check.sh [prepare ...|check|--dry_run [WORK_DIR]]" >&2; exit 2 ;;
esac
