"""LoRA at Stable Diffusion 1.5 scale: what one training step costs on a GPU, LoRA against full
fine-tuning, with and without gradient checkpointing.

The U-Net is built from SD 1.5's shipped config (``course.lora.sd15_unet``) with random weights:
a step costs the same whatever the weights are, so no download is needed (``weights=`` takes a
hub id or a folder when real weights are at hand). Inputs are what SD 1.5 trains on: latents
[B, 4, 64, 64] (512x512 images), CLIP text states [B, 77, 768], a timestep per sample; the
target is random, the loss the usual MSE. Everything runs under bf16 autocast; the trained
weights are float32 (LoRA's A and B, or the whole U-Net with AdamW's two moments).

``python -m course.lora_scale --json FILE`` measures every combination on the GPU it finds and
writes the rows; the lesson shows the shipped ones (``course/assets/lora_sd15_gpu.json``) when
it runs on a CPU. Several GPUs: ``accelerate launch -m course.lora_scale`` splits nothing here
(each process measures its own GPU); data-parallel training of the same adapter is
``accelerate launch -m course train lora ...``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from .lora import ATTENTION_TARGETS, lora_config, sd15_unet
from .models.hub import hub_access
from .models.registry import ASSETS

SHIPPED = ASSETS / "lora_sd15_gpu.json"


def measure_step(method: str, batch_size: int, checkpointing: bool, steps: int = 6,
                 device: str = "cuda", rank: int = 4, weights: str | None = None) -> dict:
    """Seconds per training step (median of ``steps`` after 2 warm-ups) and peak GPU memory
    for one configuration. method: "lora" (r = ``rank`` on to_q, to_k, to_v, to_out.0) or
    "full"."""
    from diffusers import UNet2DConditionModel

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    if weights is not None:
        access = hub_access(weights)  # offline and not cached: at once
        unet = UNet2DConditionModel.from_pretrained(weights, subfolder="unet", **access).to(device)
    else:
        unet = sd15_unet(device)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    if method == "lora":
        unet.requires_grad_(False)
        unet.to(dtype=torch.bfloat16)  # frozen weights in bf16, as diffusers' LoRA script does
        unet.add_adapter(lora_config(rank, float(rank), ATTENTION_TARGETS))
        from diffusers.training_utils import cast_training_params

        cast_training_params(unet, dtype=torch.float32)  # the trained weights stay float32
    else:
        unet.requires_grad_(True)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(batch_size, 4, 64, 64, device=device, generator=generator)
    states = torch.randn(batch_size, 77, 768, device=device, generator=generator)
    target = torch.randn(batch_size, 4, 64, 64, device=device, generator=generator)
    times = []
    for index in range(steps + 2):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        t = torch.randint(0, 1000, (batch_size,), device=device, generator=generator)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            prediction = unet(latents, t, encoder_hidden_states=states).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        if index >= 2:
            times.append(time.perf_counter() - start)
    trainable = sum(p.numel() for p in params)
    row = {"method": method, "batch": batch_size, "checkpointing": checkpointing,
           "seconds_per_step": round(sorted(times)[len(times) // 2], 4),
           "peak_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2),
           "trainable": trainable}
    del unet, optimizer, params
    torch.cuda.empty_cache()
    return row


def measure_all(batch_sizes=(1, 4), steps: int = 6, weights: str | None = None) -> dict:
    """Every (method, batch, checkpointing), with the device, versions and date."""
    import diffusers
    import peft

    if not torch.cuda.is_available():
        raise RuntimeError("LoRA at SD 1.5 scale is measured on a CUDA GPU; this machine has "
                           "none (the lesson shows the shipped GPU table instead)")
    rows = []
    for method in ("lora", "full"):
        for batch in batch_sizes:
            for checkpointing in (False, True):
                try:
                    rows.append(measure_step(method, batch, checkpointing, steps,
                                             weights=weights))
                except torch.cuda.OutOfMemoryError:
                    rows.append({"method": method, "batch": batch,
                                 "checkpointing": checkpointing, "error": "out of memory"})
                    torch.cuda.empty_cache()
                print(json.dumps(rows[-1]), flush=True)
    return {"device": torch.cuda.get_device_name(0),
            "date": datetime.date.today().isoformat(),
            "dtype": "bf16 autocast, trained weights float32, AdamW",
            "weights": weights or "random (SD 1.5 config)", "resolution": "512x512 (64x64 latents)",
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "peft": peft.__version__, "python": platform.python_version()},
            "rows": rows}


def shipped_table() -> dict | None:
    """The GPU measurement shipped with the package, or None when none has been made yet."""
    if not SHIPPED.is_file():
        return None
    return json.loads(SHIPPED.read_text())


def format_rows(result: dict) -> str:
    """A plain-text table of ``measure_all``'s result."""
    lines = [f"{result['device']}, {result['date']}, {result['dtype']}, {result['resolution']}",
             f"{'method':<8}{'batch':>6}{'checkpointing':>15}{'s / step':>10}{'peak GB':>9}"
             f"{'trainable':>13}"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"{row['method']:<8}{row['batch']:>6}{str(row['checkpointing']):>15}"
                         f"  {row['error']}")
            continue
        lines.append(f"{row['method']:<8}{row['batch']:>6}{str(row['checkpointing']):>15}"
                     f"{row['seconds_per_step']:>10.3f}{row['peak_gb']:>9.2f}"
                     f"{row['trainable']:>13,}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.lora_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--weights", help="a hub id or folder with real SD 1.5 weights")
    args = parser.parse_args(argv)
    result = measure_all(tuple(args.batch_sizes), args.steps, args.weights)
    print(format_rows(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
