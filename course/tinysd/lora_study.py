"""The LoRA lesson's measured tables: which layers and rank (the module's Q4), LoRA against full
fine-tuning and DreamBooth's prior preservation, and three common mistakes.

Each row trains one adapter (or one full fine-tune) from the bundled pipeline, on the same
images with the same seed, and judges it with ``lora_eval``:

- Q4, on the ``outline`` style (the question is about a style): each target set at r = 2, and
  ranks 1, 2, 4, 8, 16 on the set the bundled adapters use; outline adherence on the 60
  ordinary prompts, base drift (points of plain adherence lost), trainable U-Net weights,
  adapter file size;
- full fine-tuning against LoRA on the ``purple`` concept (DreamBooth's setting), each with and
  without DreamBooth's prior preservation: purple adherence on the 8 unseen combinations,
  forgetting (points of base adherence lost), what has to be stored, training time;
- mistakes, on ``purple``: a learning rate 10x too high; 8x too many steps (memorisation, as the
  nearest-neighbour distance from samples of the training captions to the training images,
  against that of fresh renders); a rank far too high for 32 images.

Every row trains ``STUDY_STEPS`` steps from the same seed.

``python -m course.tinysd.lora_study [--quick] [--json FILE]`` runs them all (about 40 minutes
on 2 CPU cores; ``--quick`` runs a few rows with few steps) and writes
``course/assets/lora_study.json`` by default, which the lesson shows next to its own live run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..models.registry import ASSETS
from ..training.adapters import adapter_dataset, save_adapter
from ..training.lora import TARGET_SETS, LoRARecipe, train_adapter
from .lora_eval import base_prompts, memorisation, purple_prompts

OUTPUT = ASSETS / "lora_study.json"
RANKS = (1, 2, 4, 8, 16)


def _fresh_pipe():
    from ..models import load_pipeline

    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _judge(pipe, adapter: str, base_reference: dict, seeds: int) -> dict:
    """Adherence to what the adapter adds, and base adherence (plain) with it, of a pipeline
    whose U-Net and text encoder hold the fine-tuned weights (LoRA active or full)."""
    from ..metrics import prompt_adherence
    from .evaluate import generate
    from .lora_eval import GUIDANCE, STEPS

    base_list = base_prompts(2)
    if adapter == "purple":
        prompts = purple_prompts("unseen", seeds)
        new = prompt_adherence(generate(pipe, prompts, GUIDANCE, STEPS, 0), prompts,
                               style="filled")
        base = prompt_adherence(generate(pipe, base_list, GUIDANCE, STEPS, 0), base_list,
                                style="filled")
    else:
        images = generate(pipe, base_list, GUIDANCE, STEPS, 0)
        new = prompt_adherence(images, base_list, style="outline")
        base = prompt_adherence(images, base_list)
    return {"new": round(new["all"], 4), "base": round(base["all"], 4),
            "forgetting": round(base_reference["all"] - base["all"], 4)}


def _row(recipe: LoRARecipe, base_reference: dict, seeds: int, with_file: bool = True,
         memorise: bool = False) -> dict:
    pipe = _fresh_pipe()
    result = train_adapter(recipe, pipe, progress=False, device="cpu")
    named = [name for name, targets in TARGET_SETS.items() if tuple(targets) == recipe.targets]
    row = {"adapter": recipe.adapter, "method": recipe.method, "rank": recipe.rank,
           "target_set": named[0] if named else "custom", "targets": list(recipe.targets),
           "steps": recipe.steps, "lr": recipe.lr,
           "prior_weight": recipe.prior_weight, "seconds": round(result.seconds, 1),
           "final_loss": result.losses[-1] if result.losses else None}
    row |= _judge(result.pipe, recipe.adapter, base_reference, seeds)
    unet = result.pipe.unet
    if recipe.method == "lora":
        row["trainable_unet"] = sum(p.numel() for n, p in unet.named_parameters()
                                    if "lora_" in n)
        row["unet_share"] = round(row["trainable_unet"] / sum(
            p.numel() for n, p in unet.named_parameters() if "lora_" not in n), 5)
        if with_file:
            with tempfile.TemporaryDirectory() as folder:
                row["file_bytes"] = save_adapter(result.pipe, folder).stat().st_size
    else:  # what must be stored: the whole fine-tuned U-Net and text encoder in float16
        row["trainable_unet"] = sum(p.numel() for p in unet.parameters())
        row["unet_share"] = 1.0
        row["file_bytes"] = 2 * (row["trainable_unet"] + sum(
            p.numel() for p in result.pipe.text_encoder.parameters()))
    if memorise:
        images, captions = adapter_dataset(recipe.adapter, recipe.n_images, recipe.seed)
        row["memorisation"] = memorisation(result.pipe, images, sorted(set(captions)) * 2)
    print(json.dumps(row), flush=True)
    return row


def _header() -> dict:
    """Where and with what a study ran."""
    import diffusers
    import peft

    from .lora_eval import GUIDANCE, STEPS

    return {"date": datetime.date.today().isoformat(),
            "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "peft": peft.__version__},
            "sampling": f"DDIM {STEPS} steps, w = {GUIDANCE:g}"}


def measure_goals(seeds: int = 8, base_seeds: int = 4) -> dict:
    """The lesson's goals for the two bundled adapters (``lora_eval``), with file sizes and the
    trainable share of the U-Net."""
    from ..lora import adapter_file, load_adapter
    from .lora_eval import MIXES, measure_adapter, measure_both

    pipe = _fresh_pipe()
    for name in ("purple", "outline"):
        load_adapter(pipe, name, adapter_name=name)
    base = sum(p.numel() for n, p in pipe.unet.named_parameters() if "lora_" not in n)
    shares = {name: round(sum(p.numel() for n, p in pipe.unet.named_parameters()
                              if "lora_" in n and f".{name}." in n) / base, 5)
              for name in ("purple", "outline")}
    goals = {name: measure_adapter(pipe, name, seeds, base_seeds)
             for name in ("purple", "outline")}
    goals["both"] = measure_both(pipe, seeds // 2)
    goals["mixes"] = {f"purple {a:g}, outline {b:g}": measure_both(pipe, seeds // 2, (a, b))
                      for a, b in MIXES}
    goals["unet_shares"] = shares
    goals["unet_share"] = max(shares.values())  # the larger of the two
    goals["file_kb"] = {name: round(adapter_file(name).stat().st_size / 1024, 1)
                        for name in ("purple", "outline")}
    goals["seeds"], goals["base_seeds"] = seeds, base_seeds
    print(json.dumps({k: v for k, v in goals.items()}), flush=True)
    return goals


#: every row trains this many steps (the bundled adapters train longer: see their training.json)
STUDY_STEPS = 500


def run_study(quick: bool = False, seeds: int = 4, goals: dict | None = None) -> dict:
    """Every table; ``quick``: one rank, two target sets, 20 steps (for tests). ``goals``: the
    bundled adapters' goals measured before (``--keep-goals``), instead of measuring them."""
    from ..metrics import prompt_adherence
    from .evaluate import generate
    from .lora_eval import GUIDANCE, STEPS

    start = time.perf_counter()
    chosen = TARGET_SETS["cross-attention + top convs"]
    base = LoRARecipe(rank=2, alpha=2.0, targets=chosen, lr=2e-3, steps=STUDY_STEPS)
    if quick:
        base = replace(base, steps=20)
        seeds = 1
    pipe = _fresh_pipe()
    base_list = base_prompts(2)
    reference = prompt_adherence(generate(pipe, base_list, GUIDANCE, STEPS, 0), base_list,
                                 style="filled")
    if goals is None:
        goals = measure_goals(1, 1) if quick else measure_goals()
    # Q4 on the outline style: every target set at r = 2, every rank on the chosen set
    outline = replace(base, adapter="outline", text_encoder_rank=0)
    sets = dict(list(TARGET_SETS.items())[-2:]) if quick else TARGET_SETS
    q4 = [_row(replace(outline, targets=t), reference, seeds) for t in sets.values()]
    q4 += [_row(replace(outline, rank=r, alpha=float(r)), reference, seeds)
           for r in ((1,) if quick else (1, 4, 8, 16))]
    # LoRA against full fine-tuning on purple, each with and without prior preservation
    purple = replace(base, adapter="purple", text_encoder_rank=4)
    versus = {"LoRA": _row(purple, reference, seeds, memorise=True),
              "LoRA + prior preservation": _row(replace(purple, prior_weight=1.0), reference,
                                                seeds),
              "full fine-tuning": _row(replace(purple, method="full"), reference, seeds),
              "full + prior preservation": _row(replace(purple, method="full",
                                                        prior_weight=1.0), reference, seeds)}
    mistakes = {
        "learning rate 10x": _row(replace(purple, lr=purple.lr * 10), reference, seeds),
        "4x the steps": _row(replace(purple, steps=purple.steps * 4), reference, seeds,
                             memorise=True),
        "rank 64 for 32 images": _row(replace(purple, rank=64, alpha=64.0), reference, seeds),
    }
    return {**_header(), "quick": quick, "seeds": seeds,
            "base_adherence": round(reference["all"], 4), "recipe": base.to_dict(),
            "goals": goals, "q4": q4, "full_vs_lora": versus, "mistakes": mistakes,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.tinysd.lora_study",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--goals-only", action="store_true",
                        help="only the bundled adapters' goals (about 10 minutes on 2 cores), "
                        "written into the existing --json file")
    parser.add_argument("--keep-goals", action="store_true",
                        help="take the goals from the existing --json file (the adapters are "
                        "unchanged) and measure only the other tables")
    parser.add_argument("--json", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    kept = json.loads(args.json.read_text())["goals"] if args.keep_goals else None
    if args.goals_only:  # the other tables stay as they were
        start = time.perf_counter()
        result = json.loads(args.json.read_text()) if args.json.exists() else {}
        result["goals"] = measure_goals()
        result["goals"]["date"] = _header()["date"]
        result["goals"]["seconds"] = round(time.perf_counter() - start, 1)
    else:
        result = run_study(quick=args.quick, goals=kept)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} ({result.get('seconds', result['goals'].get('seconds'))} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
