#!/usr/bin/env bash
# The gpu preset measured on one GPU, in one prepared run of at most ~9.5 minutes (the device tool allows 10 per
# command), most important first:
#   1. the sampler bench at 1,024 rows: naive recompute, the growing KV cache (the default) and the static cache (a
#      CUDA graph per decode step, opt-in with PRERL_CUDA_GRAPH=1), with the profiler table of the growing cache's
#      decode step;
#   2. `python dsrl.py` with no flags (the gpu preset on a CUDA machine, the default sampler), timed end to end,
#      with phases and peak memory;
#   3. the RL-step bench (random weights: the worst case); 4. the sampler bench again with both caches through
#      torch.compile (appended to bench_sample.txt); 5. the tests; each of 3-5 only in the time left.
# Everything lands in $OUT as at most 8 files (env.txt, bench_sample.txt, dsrl.txt, results.md, results.json,
# bench_train.txt, tests.txt).
#
#   OUT=/tmp/gpu-check bash experiments/gpu_check.sh                # on the GPU machine
#   PRESET=tiny OUT=/tmp/gpu-check bash experiments/gpu_check.sh    # a dry run of the script, anywhere (minutes)
set -uo pipefail
: "${OUT:?set OUT to an output folder}"
PRESET=${PRESET:-}                   # empty: dsrl.py picks (gpu on CUDA)
BENCH_PRESET=${PRESET:-gpu}
BUDGET=${BUDGET:-570}                # seconds for the whole script
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
start=$(date +%s)
left() { local s=$(( BUDGET - ($(date +%s) - start) )); echo $(( s > 1 ? s : 1 )); }  # timeout 0 would mean none
{ nvidia-smi || true; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } > "$OUT/env.txt" 2>&1
timeout 120 python3 -m experiments.bench --sampler --preset "$BENCH_PRESET" --rows 1024 --profile > "$OUT/bench_sample.txt" 2>&1
rc=$?
echo "experiments.bench --sampler exit $rc after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
t=$(date +%s)
timeout $(( $(left) > 180 ? $(left) - 90 : $(left) )) python3 dsrl.py ${PRESET:+--preset "$PRESET"} --out "$OUT/run" > "$OUT/dsrl.txt" 2>&1
echo "dsrl.py exit $? after $(( $(date +%s) - t )) s" >> "$OUT/env.txt"
cp "$OUT"/run/*/results.md "$OUT"/run/*/results.json "$OUT/" 2>> "$OUT/env.txt"
timeout $(( $(left) / 3 + 1 )) python3 -m experiments.bench --rl-step ${PRESET:+--preset "$PRESET"} --out "$OUT/empty" > "$OUT/bench_train.txt" 2>&1
echo "experiments.bench --rl-step exit $? at $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
timeout $(( $(left) / 2 + 1 )) python3 -m experiments.bench --sampler --preset "$BENCH_PRESET" --rows 1024 --compile >> "$OUT/bench_sample.txt" 2>&1
echo "experiments.bench --sampler --compile exit $? at $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
timeout $(left) python3 -m pytest -q -x > "$OUT/tests.txt" 2>&1
echo "pytest exit $? (124: out of time); all done after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
rm -rf "$OUT/run" "$OUT/empty"       # checkpoints and figures stay behind: only 8 files come back
