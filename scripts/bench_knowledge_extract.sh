#!/bin/bash
# Usage: SPLIT=runs/<name>/data/split OUT=bench_results/knowledge flock /tmp/alignrec-cpu.lock bash scripts/bench_knowledge_extract.sh
# REKI cost benchmark: SmolLM2 knowledge extraction on amazon18-scientific: collective (all items/users, 48+48 clusters),
# an individual sample (cost per call -> extrapolated), the LLM's own factor answer. --max_seconds budgets stop cleanly; rerunning resumes from the cache.
set -x
cd "$(dirname "$0")/.."
PY=${PY:-python}
S=${SPLIT:?set SPLIT to a saved amazon18-scientific split (alignrec data prepare)}
F="use case,material,standard,brand"
date -u
$PY -m alignrec.cli knowledge extract --split_dir $S --out_dir ${OUT:-bench_results/knowledge}/sci_col --mode collective \
  --item_clusters 48 --user_clusters 48 --factors "$F" --max_new_tokens 48 --batch_size 16 --max_seconds 330 \
  --cache_file ${OUT:-bench_results/knowledge}/sci_answers.jsonl
date -u
$PY -m alignrec.cli knowledge extract --split_dir $S --out_dir ${OUT:-bench_results/knowledge}/sci_ind --mode individual \
  --max_items 32 --max_users 32 --factors "$F" --max_new_tokens 48 --batch_size 16 --max_seconds 150 \
  --cache_file ${OUT:-bench_results/knowledge}/sci_answers.jsonl
date -u
PYTHONPATH=. $PY - <<'PYEOF'
from alignrec.knowledge.prompts import factor_prompt, parse_factors
from recdata.llm_generation import HFGenerator
from recdata.paths import default_llm_dir
g = HFGenerator(default_llm_dir(), max_new_tokens=48, batch_size=1)
a = g([factor_prompt("scientific and industrial supplies", 4)])[0]
print("FACTOR_ANSWER", repr(a), "PARSED", parse_factors(a, 4), "tokens", g.generated_tokens, "s", round(g.seconds, 1))
PYEOF
date -u
