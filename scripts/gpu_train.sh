#!/usr/bin/env bash
# Train the shipped default decoder and the JIIO-vs-naive training comparison on a GPU.
# Usage: OUT=folder bash scripts/gpu_train.sh   (needs the project importable as jiio_cli)
set -u
export PYTHONUNBUFFERED=1
JIIO=(python3 -c "from jiio_cli.cli.app import main; main()")
nvidia-smi --query-gpu=name --format=csv,noheader
for inner in jiio naive; do
  timeout 150 "${JIIO[@]}" train --task denoise --epochs 2 --max-train 640 --batch-size 64 \
    --inner "$inner" --out "$OUT/cmp_$inner" --device cuda --seed 0 --json \
    > "$OUT/cmp_$inner.json" 2> "$OUT/cmp_$inner.log"
  echo "cmp $inner rc=$?"; cat "$OUT/cmp_$inner.json"; tail -2 "$OUT/cmp_$inner.log"
  rm -f "$OUT/cmp_$inner"/*-best.safetensors "$OUT/cmp_$inner"/*-last.safetensors
done
timeout "${TRAIN_SECONDS:-270}" "${JIIO[@]}" train --task inpaint --hole-size 10 --sigma 0:0.3 \
  --epochs "${EPOCHS:-8}" --batch-size 64 --out "$OUT/default" --device cuda --seed 0 --json \
  > "$OUT/default.json" 2> "$OUT/default.log"
echo "default rc=$?"; cat "$OUT/default.json"; tail -3 "$OUT/default.log"
ls -la "$OUT/default"
