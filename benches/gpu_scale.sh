#!/usr/bin/env bash
# GPU check for issue 15 (sharded training): GPT-2 medium (gpt2-350m preset) on one GPU, without and
# with --fsdp, a few minutes each, recording tokens/s, MFU and peak memory (torch.cuda.max_memory_allocated).
#
#   bash benches/gpu_scale.sh                      # one GPU, ~6-8 minutes on an H100/H200
#   MODES="plain fsdp fsdp-ac" bash benches/gpu_scale.sh   # also FSDP with activation checkpointing
#   DRY_RUN=1 bash benches/gpu_scale.sh            # CPU, no GPU needed: the same steps with a tiny model
#
# Modes (each a separate torchrun --standalone launch of NPROC processes, default 1):
#   plain    gpt.train as it is (one process: no wrapper; several: DDP)
#   fsdp     gpt.train --fsdp
#   fsdp-ac  gpt.train --fsdp --activation-checkpointing
# Data: synthetic learnable shards over GPT-2's vocabulary (benches/gpu_check.py's stream; best loss
# ln 4 = 1.39), written under WORK. No network, no Rust extension, installs nothing.
# Departures from the preset, for time: STEPS (default 30) steps with a 10-step warmup, validation only
# at the end, no HellaSwag, samples or TensorBoard, one checkpoint at the end (it exercises the sharded
# checkpoint path with --fsdp). The total batch stays the preset's 524,288 tokens (B=32, 16 micro-steps).
#
# Environment: STEPS, TOTAL_BATCH, BATCH (micro-batch), NPROC, MODES, COMPILE (1: --compile, the
# default on GPU), RUN_TIMEOUT (seconds per mode, default 480), WORK (default /tmp/gpu_scale), PYTHON,
# OUT (if set: gpu_scale.json, gpu_scale.md and each mode's log.jsonl are copied there).
# Exit status: 0 when every mode ran and the loss fell, 1 otherwise (each mode runs even if one fails).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
MODES="${MODES:-plain fsdp}"
NPROC="${NPROC:-1}"
WORK="${WORK:-/tmp/gpu_scale}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [[ "$DRY_RUN" == 1 ]]; then
    # The same launches, flags and summary on CPU: the tiny-cpu shape with GPT-2's vocabulary, a few steps.
    STEPS="${STEPS:-6}"; TOTAL_BATCH="${TOTAL_BATCH:-512}"; BATCH="${BATCH:-2}"; COMPILE="${COMPILE:-0}"
    RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
    MODEL=(--preset tiny-cpu --vocab-size 50304 --seq-len 128 --device cpu --threads 1)
    ENV_FLAGS=(--allow-cpu)
    WARMUP=2
else
    STEPS="${STEPS:-30}"; TOTAL_BATCH="${TOTAL_BATCH:-524288}"; BATCH="${BATCH:-32}"; COMPILE="${COMPILE:-1}"
    RUN_TIMEOUT="${RUN_TIMEOUT:-480}"
    MODEL=(--preset gpt2-350m)
    ENV_FLAGS=()
    WARMUP=10
fi
COMPILE_FLAG=(--no-compile)
[[ "$COMPILE" == 1 ]] && COMPILE_FLAG=(--compile)

echo "== environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 120 "$PYTHON" benches/gpu_scale.py env "${ENV_FLAGS[@]}" || exit 1

echo "== synthetic shards"
rm -rf "$WORK"
mkdir -p "$WORK"
train_tokens=$(( (STEPS + 2) * TOTAL_BATCH ))
timeout 300 "$PYTHON" benches/gpu_scale.py shards "$WORK/shards" --train-tokens "$train_tokens" \
    --val-tokens $(( 4 * TOTAL_BATCH )) || exit 1

for mode in $MODES; do
    case "$mode" in
        plain) EXTRA=() ;;
        fsdp) EXTRA=(--fsdp) ;;
        fsdp-ac) EXTRA=(--fsdp --activation-checkpointing) ;;
        *) echo "unknown mode '$mode' (plain, fsdp, fsdp-ac)"; exit 2 ;;
    esac
    echo "== $mode: ${MODEL[*]} ${EXTRA[*]}, $STEPS steps x $TOTAL_BATCH tokens, B=$BATCH, $NPROC process(es)"
    run="$WORK/$mode"
    mkdir -p "$run"
    timeout "$RUN_TIMEOUT" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
        benches/gpu_scale.py train --peak-dir "$run/peak" -- \
        "${MODEL[@]}" "${EXTRA[@]}" --data "$WORK/shards" --out "$run/out" \
        --max-steps "$STEPS" --warmup-steps "$WARMUP" --total-batch-size "$TOTAL_BATCH" --batch-size "$BATCH" \
        --val-every "$STEPS" --val-steps 2 --hellaswag none --sample-every 0 --no-tensorboard \
        --checkpoint-every 0 --log-every 1 "${COMPILE_FLAG[@]}" 2>&1 | tee "$run/train.txt"
    echo "${PIPESTATUS[0]}" > "$run/status"
    [[ -f "$run/out/log.jsonl" ]] && cp "$run/out/log.jsonl" "$run/log.jsonl"
    ls -la "$run/out" 2>/dev/null | grep ckpt_ || true
    if [[ -n "${OUT:-}" ]]; then mkdir -p "$OUT/gpu_scale_logs/$mode"; cp "$run"/train.txt "$run"/status "$OUT/gpu_scale_logs/$mode/" 2>/dev/null; cp "$run/log.jsonl" "$OUT/gpu_scale_logs/$mode/" 2>/dev/null; fi
    # The checkpoint (GBs for 350M) stays out of $OUT; free the disk for the next mode.
    rm -rf "$run/out"/ckpt_*
done

echo "== summary"
# shellcheck disable=SC2086
timeout 60 "$PYTHON" benches/gpu_scale.py summary "$WORK" --modes $MODES --skip "$(( STEPS > 10 ? 5 : 1 ))" \
    ${OUT:+--out "$OUT"}
