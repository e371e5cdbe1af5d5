"""The cost of one Stable Diffusion 1.5 image on a GPU, measured on the full-size stand-in.

SD 1.5's classes and widths with random weights (``course.tinysd.standin``, scale "full"), so it
runs with no network: one 512x512 image at 25 PNDM steps, guidance 7.5, float16. Prints and
writes (``--json``) the median time of three images after one warm-up, and the peak GPU memory.

    python tools/standin_gpu_check.py --json standin_gpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time

import torch

from course.models import load_tiny_pipeline
from course.tinysd.standin import save_standin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 1
    with tempfile.TemporaryDirectory() as folder:
        save_standin(folder, scale="full")
        pipe = load_tiny_pipeline(folder, device="cuda", dtype=torch.float16)
    unet_weights = sum(p.numel() for p in pipe.unet.parameters())

    def one_image(seed: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipe("a photo of a red fox in the snow", num_inference_steps=args.steps,
             guidance_scale=7.5, generator=torch.Generator("cuda").manual_seed(seed))
        torch.cuda.synchronize()
        return time.perf_counter() - start

    one_image(0)  # warm-up: kernels chosen, memory pools filled
    torch.cuda.reset_peak_memory_stats()
    seconds = [one_image(seed) for seed in (1, 2, 3)]
    result = {"date": datetime.date.today().isoformat(), "gpu": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "dtype": "float16", "size": 512, "steps": args.steps,
              "guidance_scale": 7.5, "unet_weights": unet_weights,
              "seconds_per_image": round(statistics.median(seconds), 3),
              "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
