#!/bin/bash
# Usage (after bench_knowledge_extract.sh): SPLIT=... OUT=... bash scripts/bench_knowledge_train.sh
# REKI lift benchmark: encode the collective knowledge (MiniLM), then SASRec and SASRec + item knowledge on amazon18-scientific
# with the same SASRec config (12 epochs max, patience 3). Seeds, item/user rows and paired intervals: bench_knowledge_rows.py.
set -x
cd "$(dirname "$0")/.."
PY=${PY:-python}
S=${SPLIT:?set SPLIT to a saved amazon18-scientific split (alignrec data prepare)}
T="--sasrec_epochs 12 --sasrec_patience 3 --sasrec_lr 2e-3"
date -u
$PY -m alignrec.cli knowledge encode --knowledge_dir ${OUT:-bench_results/knowledge}/sci_col --out_dir ${OUT:-bench_results/knowledge}/sci_col_vec --encoder sentence
date -u
$PY -m alignrec.cli knowledge train --split_dir $S --vectors_dir ${OUT:-bench_results/knowledge}/sci_col_vec --out_dir ${OUT:-bench_results/knowledge}/sci_train $T
date -u
