#!/bin/bash
# Usage: flock /tmp/alignrec-cpu.lock bash scripts/bench_llm4msr.sh
# LLM4MSR on amazon-food-kitchen (kcore 5, 7,649 users, food / kitchen): SmolLM2 scenario-level knowledge (2 calls)
# and user-level knowledge (300 sampled users individually + one prompt per k-means cluster of the others, 64),
# MiniLM encoding, then the per-scenario table: popularity, SASRec on all data, SASRec per scenario, the backbone
# (per-scenario towers), the backbone + LLM4MSR meta layers. Reruns resume (prepared split, answer cache);
# --max_seconds stops generation cleanly (rerun the script to continue). ROWS=popularity,backbone,llm4msr skips
# the part-1 rows when they are measured already (same seeds, same split).
set -ex
cd "$(dirname "$0")/.."
PY=${PY:-python}
DATA=${DATA:-../shared/datasets/amazon-food-kitchen}
OUT=${OUT:-bench_results/llm4msr_food_kitchen}
ROWS=${ROWS:-popularity,sasrec_all,sasrec_per_scenario,backbone,llm4msr}
date -u
S=$($PY scripts/bench_scenarios.py --path "$DATA" --scenario_item_field domain --kcore 5 --print_split | tail -1)
date -u
$PY -m alignrec.cli scenarios extract --split_dir "$S" --out_dir "$OUT/extract" --user_sample 300 --user_clusters 64 \
  --max_new_tokens 64 --batch_size 16 --max_seconds 2400
date -u
$PY -m alignrec.cli knowledge encode --knowledge_dir "$OUT/extract" --out_dir "$OUT/vectors" --encoder sentence
date -u
$PY scripts/bench_scenarios.py --path "$DATA" --scenario_item_field domain --kcore 5 --rows "$ROWS" \
  --vectors_dir "$OUT/vectors" --knowledge_dir "$OUT/extract" --out "$OUT/scenarios.json"
date -u
cat "$OUT/extract/cost.json"
