#!/usr/bin/env bash
# Train the bundled tiny Stable Diffusion (course/assets/tiny_shapes) on one GPU, then judge it.
#
#   OUT=/some/dir tools/train_tiny_sd_gpu.sh [TIME_LIMIT_SECONDS]      (default 240)
#
# Needs: the package installed (pip install -e . or its wheel), torch with CUDA, diffusers,
# transformers, accelerate; no network. The time limit covers both training stages (rendering
# the data and encoding the latents included); saving and evaluating come after it (1-2 minutes
# on an H200). The weights are written before anything is evaluated, and a failing evaluation
# does not fail the script, so the trained model is never lost.
#
# Writes under $OUT:
#   tiny_shapes/      the pipeline folder (save_pretrained, float16 safetensors, training.json)
#   env.txt           versions and GPU
#   train.log         training output and its JSON summary
#   digest.txt        sha256 and size of tiny_shapes/, for course/models/registry.py
#   eval.txt, .json   adherence per guidance scale in float32, samplers compared
#   eval_fp16.*       the same pipeline loaded in float16 (what a GPU learner gets)
# Then copy $OUT/tiny_shapes to course/assets/tiny_shapes, and make its tokenizer/vocab.json and
# merges.txt links to ../../tiny_clip_vocab/ (the one vocabulary; tests/test_tiny_sd.py checks).
#
# Knobs (environment): PYTHON, EVAL_DEVICE (cuda), N_PROMPTS (96), DATASET_SIZE (32768),
# BATCH_SIZE (512).
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=${1:-240}
OUT=${OUT:-$PWD/tiny-sd-gpu-out}
DEST="$OUT/tiny_shapes"
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
EVAL_DEVICE=${EVAL_DEVICE:-cuda}
N_PROMPTS=${N_PROMPTS:-96}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import accelerate, diffusers, torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__,
      "transformers", transformers.__version__, "accelerate", accelerate.__version__)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
PY

# Stage 1 stops at 3000 steps (~30 s) unless 20% of the limit runs out first; stage 2 takes the
# rest, its cosine learning rate fitted to the time left. Batch 512: at this size the GPU is
# bound by kernel launches, so a bigger batch costs little time and averages more samples.
"$PYTHON" -m course train tiny-sd --time-limit "$LIMIT" --output "$DEST" \
    --vae-steps 3000 --vae-batch-size 128 --steps 100000 --batch-size "${BATCH_SIZE:-512}" \
    --lr 1e-3 --dataset-size "${DATASET_SIZE:-32768}" --no-progress 2>&1 | tee "$OUT/train.log"
if [ ! -f "$DEST/model_index.json" ]; then
    echo "training wrote no pipeline; see $OUT/train.log" >&2
    exit 1
fi
"$PYTHON" -m course.models "$DEST" | tee "$OUT/digest.txt"
du -sh "$DEST"

# Evaluation: never fatal, the weights are already saved.
timeout 420 "$PYTHON" -m course.tinysd.evaluate "$DEST" --device "$EVAL_DEVICE" \
    --dtype float32 --n-prompts "$N_PROMPTS" --scales 1 2 3 5 7.5 12 --steps 25 \
    --compare-samplers --json "$OUT/eval.json" 2>&1 | grep -v -i "warn\|it/s" \
    | tee "$OUT/eval.txt" || echo "float32 evaluation failed (the weights are safe in $DEST)"
if [ "$EVAL_DEVICE" != "cpu" ]; then
    timeout 120 "$PYTHON" -m course.tinysd.evaluate "$DEST" --device "$EVAL_DEVICE" \
        --dtype float16 --n-prompts "$N_PROMPTS" --scales 1 3 5 --steps 25 \
        --json "$OUT/eval_fp16.json" 2>&1 | grep -v -i "warn\|it/s" \
        | tee "$OUT/eval_fp16.txt" || echo "float16 evaluation failed (weights safe in $DEST)"
fi
echo "done: $DEST"
exit 0
