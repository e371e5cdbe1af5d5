#!/usr/bin/env bash
# The GPU checks of lesson 07 (LoRA), as one script for a CUDA machine with no network:
#
#   OUT=/some/dir tools/lora_gpu_checks.sh
#
# 1. LoRA at Stable Diffusion 1.5 scale: time per training step and peak memory, LoRA r = 4
#    against full fine-tuning, batch 1 and 4, with and without gradient checkpointing
#    (python -m course.lora_scale); the JSON is what the lesson shows on a CPU: copy it to
#    course/assets/lora_sd15_gpu.json.
# 2. The purple adapter trained on the GPU in bf16 (trained weights float32), then judged.
# 3. Lesson 07 in the learner's default mode on the GPU (goal: 1 minute), timed.
#
# Writes under $OUT: env.txt, sd15.json/.txt, purple_gpu/ (adapter), train.txt, lesson07.txt.
# Each step is bounded by `timeout`; a failing step does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/lora-gpu-out}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import diffusers, peft, torch
print("torch", torch.__version__, "diffusers", diffusers.__version__, "peft", peft.__version__)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
PY

timeout 240 "$PYTHON" -m course.lora_scale --json "$OUT/sd15.json" 2>&1 | tee "$OUT/sd15.txt" \
    || echo "SD 1.5 scale measurement failed or timed out"

timeout 120 "$PYTHON" -m course train lora --adapter purple --output "$OUT/purple_gpu" \
    --no-progress 2>&1 | tail -3 | tee "$OUT/train.txt" || echo "GPU training failed"

timeout 180 "$PYTHON" - <<'PY' 2>&1 | tee "$OUT/lesson07.txt" || echo "lesson 07 run failed"
import time
from course.dev.notebooks import execute_notebook
start = time.perf_counter()
notebook, seconds = execute_notebook("solutions/07_lora.ipynb", fast=False, timeout=170)
errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
          if o.get("output_type") == "error"]
print(f"lesson 07 default mode on the GPU: {seconds:.1f} s of cells, "
      f"{time.perf_counter() - start:.1f} s in all, {len(errors)} errors")
for o in errors:
    print(o.get("ename"), o.get("evalue", "")[:300])
PY
echo "done: $OUT"
