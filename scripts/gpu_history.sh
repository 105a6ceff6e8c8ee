#!/usr/bin/env bash
# Anderson's history in bfloat16 on a GPU: the solver tests on CUDA (graph replay included),
# then iteration time and memory per sample, fp32 against bf16 history, eager and graph.
# Usage: OUT=folder bash scripts/gpu_history.sh   (with the project importable as jiio_cli)
set -u
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/engine/test_cuda_graph.py \
    tests/engine/test_anderson.py tests/engine/test_jiio.py -k "history or graph or bf16 or naive_adam" 2>&1 | tail -5
  echo "tests rc=${PIPESTATUS[0]}"
} > "$OUT/log.txt" 2>&1
timeout 200 python3 -m jiio_cli bench --task engine --sizes 64x64x32 --history fp32,bf16 \
  --compile --device cuda --json > "$OUT/engine.json" 2>> "$OUT/log.txt"
echo "engine rc=$?" >> "$OUT/log.txt"
cat "$OUT/log.txt"
python3 - "$OUT/engine.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["rows"]:
    print(r["memory"], r["history"], r["mode"], "iter %.3f ms" % (1e3 * r["jiio_iteration_seconds"]),
          "f+vjp %.3f ms" % (1e3 * r["f_vjp_seconds"]), "ratio %.2f" % r["overhead_ratio"],
          "hist %.2f MiB" % r["jiio_history_mib_per_sample"], "peak", r["jiio_peak_mib_per_sample"],
          "naive peak", r["naive_peak_mib_per_sample"])
PY
