#!/usr/bin/env bash
# One-GPU check of the trainer (about 3 minutes on one H100): GPT-2 124M (gpt2-124m preset), bf16 autocast,
# torch.compile, on synthetic learnable shards; prints tokens/s, MFU and the loss, exits non-zero on failure.
#
#   bash benches/gpu_check.sh            # from anywhere; needs python3 with torch, numpy, safetensors
#   STEPS=50 TOTAL_BATCH=65536 bash benches/gpu_check.sh
#
# Pure PyTorch: no Rust extension, no network, installs nothing. Departures from the preset, for time:
# total batch 131,072 tokens (B=64, T=1024, 2 micro-steps) instead of 524,288, a 100-step schedule with
# 10 warmup steps, validation every 50 steps on 5 batches, no HellaSwag, no samples, no TensorBoard,
# one checkpoint at the end (it exercises the checkpoint path on GPU).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
STEPS="${STEPS:-100}"
TOTAL_BATCH="${TOTAL_BATCH:-131072}"
BATCH="${BATCH:-64}"
WORK="${WORK:-/tmp/gpu_check}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$WORK"

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 120 "$PYTHON" benches/gpu_check.py env

echo "== synthetic shards"
train_tokens=$(( STEPS * TOTAL_BATCH + TOTAL_BATCH ))
timeout 120 "$PYTHON" benches/gpu_check.py shards "$WORK/shards" --train-tokens "$train_tokens"

echo "== training: gpt2-124m preset, ${STEPS} steps x ${TOTAL_BATCH} tokens, B=${BATCH}, bf16, --compile"
rm -rf "$WORK/run"
timeout 480 "$PYTHON" -m gpt.train --preset gpt2-124m \
    --data "$WORK/shards" --out "$WORK/run" \
    --max-steps "$STEPS" --warmup-steps 10 --total-batch-size "$TOTAL_BATCH" --batch-size "$BATCH" \
    --val-every 50 --val-steps 5 --hellaswag none --sample-every 0 --no-tensorboard \
    --checkpoint-every 0 --log-every 5 --compile

echo "== summary"
timeout 60 "$PYTHON" benches/gpu_check.py summary "$WORK/run/log.jsonl"
ls -la "$WORK/run"
# Under a runner that collects $OUT, keep the log (not the 1.5 GB checkpoint or the shards).
if [[ -n "${OUT:-}" && -d "${OUT}" ]]; then cp "$WORK/run/log.jsonl" "$OUT/gpu_check_log.jsonl"; fi
