#!/usr/bin/env bash
# Train the shipped decoder and meta-model on one GPU side by side, then measure them there.
# Usage: OUT=folder bash scripts/gpu_models.sh   (with the project importable as jiio_cli)
# The meta-model's epoch count is sized from a one-epoch probe so that both trainings end
# within about TRAIN_SECONDS. Only a few files come back from a lent GPU machine, so the
# script leaves exactly four in $OUT: results.txt (every step's JSON), log.txt (stderr),
# decoder.safetensors and meta.safetensors (the best checkpoints).
set -u
export PYTHONUNBUFFERED=1
JIIO=(python3 -m jiio_cli)
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
began=$SECONDS

META_OPTS=(train --task meta --ways 5,20 --queries 2 --tasks-per-step 8 --image-size 20 --width 32
  --context-dim 64 --inner-iters 30 --hyper-step 10 --jac-weight 0.5 --lr 2e-3 --save-every 50
  --device cuda --seed 0 --json)

# Decoder: wider and with a larger latent than before; 8 epochs as before.
timeout $((TRAIN_SECONDS + 60)) "${JIIO[@]}" train --task inpaint --hole-size 10 --sigma 0:0.3 \
  --width 64 --latent-dim 64 --epochs "${DECODER_EPOCHS:-8}" --batch-size 64 \
  --out "$OUT/decoder" --device cuda --seed 0 --json > "$OUT/decoder.json" 2> "$OUT/decoder.log" &
decoder_pid=$!

probe_began=$SECONDS
timeout 120 "${JIIO[@]}" "${META_OPTS[@]}" --episodes-per-epoch 80 --epochs 1 \
  --out "$OUT/meta_probe" > "$OUT/meta_probe.json" 2> "$OUT/meta_probe.log"
probe=$((SECONDS - probe_began))
# A probe epoch is 10 steps and one evaluation (about 5 steps' worth); a full epoch 50 steps.
left=$((TRAIN_SECONDS - (SECONDS - began)))
per_epoch=$(( (probe - 8) * 55 / 15 + 1 ))
epochs=$(( left / per_epoch ))
[ "$epochs" -lt 3 ] && epochs=3
[ "$epochs" -gt 24 ] && epochs=24
echo "meta probe ${probe}s, ~${per_epoch}s per epoch, ${left}s left: $epochs epochs"
rm -rf "$OUT/meta_probe"
timeout $((left + 60)) "${JIIO[@]}" "${META_OPTS[@]}" --episodes-per-epoch 400 --epochs "$epochs" \
  --out "$OUT/meta" > "$OUT/meta.json" 2> "$OUT/meta.log"
echo "meta rc=$? at $((SECONDS - began))s"; tail -c 600 "$OUT/meta.json"; echo
wait $decoder_pid
echo "decoder rc=$? at $((SECONDS - began))s"; tail -c 600 "$OUT/decoder.json"; echo

# Measurements on the same card, side by side.
timeout 200 "${JIIO[@]}" bench --task reconstruct --quality --checkpoint "$OUT/decoder/inpaint-best.safetensors" \
  --device cuda --json > "$OUT/decoder_quality.json" 2> "$OUT/decoder_quality.log" &
q_pid=$!
for ways in 5 20; do
  queries=$([ "$ways" = 5 ] && echo 5 || echo 2)
  episodes=$([ "$ways" = 5 ] && echo 600 || echo 200)
  timeout 150 "${JIIO[@]}" adapt --checkpoint "$OUT/meta/meta-best.safetensors" --episodes "$episodes" \
    --ways "$ways" --shots 1 --queries "$queries" --device cuda --seed 0 --json \
    > "$OUT/adapt_$ways.json" 2> "$OUT/adapt_$ways.log"
  echo "adapt $ways-way rc=$? at $((SECONDS - began))s"
done
wait $q_pid
echo "quality rc=$? at $((SECONDS - began))s"
for name in meta_probe meta decoder decoder_quality adapt_5 adapt_20; do
  { echo "=== $name"; cat "$OUT/$name.json" 2>/dev/null; echo; } >> "$OUT/results.txt"
  { echo "=== $name"; cat "$OUT/$name.log" 2>/dev/null; } >> "$OUT/log.txt"
  rm -f "$OUT/$name.json" "$OUT/$name.log"
done
mv "$OUT/decoder/inpaint-best.safetensors" "$OUT/decoder.safetensors" 2>/dev/null
mv "$OUT/meta/meta-best.safetensors" "$OUT/meta.safetensors" 2>/dev/null
rm -rf "$OUT/decoder" "$OUT/meta"
ls -la "$OUT"
