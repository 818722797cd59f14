#!/usr/bin/env bash
# The gpu preset measured on one GPU, in one prepared run: `python dsrl.py` with no flags (the gpu preset on a
# CUDA machine), timed end to end with its phases and peak memory; the sampler bench at 1,024 rows (naive, KV cache,
# KV cache + torch.compile) with the profiler table of its decode step; the RL-step bench of both presets; the tests. Everything lands in $OUT as at most
# 8 files (env.txt, dsrl.txt, results.md, results.json, bench_sample.txt, bench_train.txt, tests.txt).
#
#   OUT=/tmp/gpu-check bash experiments/gpu_check.sh                # on the GPU machine
#   PRESET=tiny OUT=/tmp/gpu-check bash experiments/gpu_check.sh    # a dry run of the script, anywhere (minutes)
set -uo pipefail
: "${OUT:?set OUT to an output folder}"
PRESET=${PRESET:-}                   # empty: dsrl.py picks (gpu on CUDA)
BENCH_PRESET=${PRESET:-gpu}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
{ nvidia-smi || true; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } > "$OUT/env.txt" 2>&1
start=$(date +%s)
python3 dsrl.py ${PRESET:+--preset "$PRESET"} --out "$OUT/run" > "$OUT/dsrl.txt" 2>&1
echo "dsrl.py exit $? after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
cp "$OUT"/run/*/results.md "$OUT"/run/*/results.json "$OUT/" 2>> "$OUT/env.txt"
python3 sample.py --bench --preset "$BENCH_PRESET" --rows 1024 --compile --profile > "$OUT/bench_sample.txt" 2>&1
python3 train.py --bench ${PRESET:+--preset "$PRESET"} --out "$OUT/empty" > "$OUT/bench_train.txt" 2>&1  # random weights
python3 -m pytest -q -x > "$OUT/tests.txt" 2>&1
echo "all done after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
rm -rf "$OUT/run" "$OUT/empty"       # checkpoints and figures stay behind: only 8 files come back
