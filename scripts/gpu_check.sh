#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one run: CUDA-graph tests, engine cost
# (eager and graph, batch 16/64/256, fp32 and bf16), the reconstruct / attack / adapt
# benches, bf16-vs-fp32 training, and the out-of-memory message.
# The reconstruct steps have 90 s: since 2026-12-05 the naive method's solves run to
# their tolerance (`--solve-iters` 100), about 2.5 times its time with the old cap of 30.
# Usage: OUT=folder bash scripts/gpu_check.sh   (with the project importable as jiio_cli)
set -u
export PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
RES="$OUT/results.jsonl"
JIIO=(python3 -m jiio_cli)

step() {  # step NAME SECONDS COMMAND...: JSON stdout to results.jsonl, the rest to the log
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%T))" | tee -a "$LOG"
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/step.out" 2>> "$LOG"
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - began))}" >> "$RES"
  cat "$OUT/step.out" >> "$RES"
  tail -c 1500 "$OUT/step.out" | tee -a "$LOG" > /dev/null
  echo "--- $name rc=$rc in $((SECONDS - began)) s" | tee -a "$LOG"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"

step tests 60 python3 -m pytest -q -p no:cacheprovider tests/engine/test_cuda_graph.py \
  tests/engine/test_anderson.py
step engine-b64 60 "${JIIO[@]}" bench --task engine --batch-size 64 --channels 64 --size 32 \
  --compile --device cuda --json
step reconstruct-graph 90 "${JIIO[@]}" bench --task reconstruct --compile --device cuda \
  --json --plot "$OUT/reconstruct.png"
step attack-graph 60 "${JIIO[@]}" bench --task attack --eps 1.0 --norm l2 --batch-size 100 \
  --compile --device cuda --json --plot "$OUT/attack.png"
step adapt-graph 60 "${JIIO[@]}" bench --task adapt --batch-size 32 --naive-steps 50 --ways 5 \
  --compile --device cuda --json
step precision 110 python3 scripts/precision_bench.py --device cuda --precisions fp32,bf16
for b in 16 256; do
  step "engine-b$b" 50 "${JIIO[@]}" bench --task engine --batch-size "$b" --channels 64 \
    --size 32 --compile --device cuda --json
done
step engine-b64-bf16 50 "${JIIO[@]}" bench --task engine --batch-size 64 --channels 64 \
  --size 32 --compile --precision bf16 --device cuda --json
step reconstruct-eager 90 "${JIIO[@]}" bench --task reconstruct --device cuda --json
step oom 40 "${JIIO[@]}" bench --task engine --batch-size 4096 --channels 1024 --size 256 \
  --device cuda
tail -3 "$LOG"
rm -f "$OUT/step.out"
echo "done"
