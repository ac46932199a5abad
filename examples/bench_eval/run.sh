#!/usr/bin/env bash
# Benchmark: pycocoevalcap vs `dicoflow-eval` (the caption metrics of
# `dicoflow eval`, without libtorch) on a generated 5,000-image,
# 5-reference set, for the metrics in $METRICS (default bleu,rouge,cider;
# `meteor` needs Java for the toolkit and `make meteor-data` for dicoflow).
# Run from the crate root after creating .pyenv:
#   python3 -m venv .pyenv && .pyenv/bin/pip install pycocoevalcap
#   [METRICS=meteor] [VARIED=1] [TOOLKIT_PYTHON=.venv/bin/python] bash examples/bench_eval/run.sh [RUNS]
# VARIED=1 varies casing, spacing and punctuation of every caption
# (make_bench_set.py --varied). TOOLKIT_PYTHON is any Python with
# pycocoevalcap (default .pyenv/bin/python). TOOLKIT_RUNS (default RUNS)
# runs the slow toolkit in the first TOOLKIT_RUNS rounds only.
set -euo pipefail
runs=${1:-3}
toolkit_runs=${TOOLKIT_RUNS:-$runs}
export METRICS=${METRICS:-bleu,rouge,cider}
toolkit_python=${TOOLKIT_PYTHON:-.pyenv/bin/python}
echo "metrics: $METRICS${VARIED:+, varied set}"
dir=$(mktemp -d)
python3 examples/bench_eval/make_bench_set.py "$dir" 5000 ${VARIED:+--varied}
cargo build -q --release -p dicoflow-metrics --bin dicoflow-eval
for i in $(seq "$runs"); do
  if [ "$i" -le "$toolkit_runs" ]; then
    /usr/bin/time -f "toolkit: %e s wall, %U s user, %S s sys" \
      "$toolkit_python" examples/bench_eval/toolkit_eval.py "$dir/annotations.json" "$dir/results.json" \
      "$dir/tk_pi.json" > "$dir/tk.json" 2> "$dir/tk.err" || { cat "$dir/tk.err"; exit 1; }
    tail -1 "$dir/tk.err"
  fi
  /usr/bin/time -f "dicoflow-eval: %e s wall, %U s user, %S s sys" \
    target/release/dicoflow-eval --annotations "$dir/annotations.json" \
    --results "$dir/results.json" --metrics "$METRICS" --json --per-image "$dir/rs_pi.json" > "$dir/rs.json"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
cat "$dir/rs.json"
python3 examples/bench_eval/compare.py "$dir/tk.json" "$dir/rs.json" "$dir/tk_pi.json" "$dir/rs_pi.json"
rm -rf "$dir"
