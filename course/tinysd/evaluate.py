"""How well tiny Stable Diffusion draws what it is asked for, measured by image analysis.

Prompt adherence (``course.metrics.prompt_adherence``) reads colour, shape and position off each
generated image and compares them with the prompt. Three numbers put it in context:

- per guidance scale w, on "seen" prompts (combinations in the training split) and on "held-out"
  ones (the six combinations training never showed, so only composition gets them right);
- the empty prompt "": the unconditional model, judged against the same prompts. It draws shapes
  but cannot know which were asked for, so it sits near chance (1/4 colour, 1/3 shape, 1/5
  position, 1/60 all): the distance from there is what the text does;
- the autoencoder's ceiling: the adherence of its own reconstructions of fresh images. The
  pipeline cannot beat what its decoder can draw.

``python -m course.tinysd.evaluate [DIR]`` prints the table for a trained pipeline.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..data.shapes import HELDOUT, all_combinations, caption, shapes_dataset
from ..metrics import prompt_adherence

SPLITS = ("seen", "heldout")
ATTRIBUTES = ("color", "shape", "position", "all", "clean")


def evaluation_prompts(split: str, n: int, seed: int = 0) -> list[str]:
    """``n`` captions of the split ("seen" or "heldout"), each combination equally often (in
    shuffled rounds), the same for the same seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    combos = [c for c in all_combinations() if (c in HELDOUT) == (split == "heldout")]
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(combos), generator=generator)
                       for _ in range(-(-n // len(combos)))])[:n]
    return [caption(combos[i]) for i in order.tolist()]


@torch.no_grad()
def generate(pipe, prompts: list[str], guidance_scale: float = 5.0, steps: int = 25,
             seed: int = 0, batch_size: int = 128, **kwargs) -> torch.Tensor:
    """Images [n, 3, H, W] in [-1, 1] for ``prompts``, from the pipeline's own ``__call__``.

    The start noise of prompt i depends only on ``seed`` and i, so runs that differ in guidance
    scale or sampler start from the same noise.
    """
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        generators = [torch.Generator().manual_seed(seed * 100003 + start + i)
                      for i in range(len(chunk))]
        out = pipe(chunk, guidance_scale=guidance_scale, num_inference_steps=steps,
                   generator=generators, output_type="pt", **kwargs).images
        images.append(out.float().cpu() * 2 - 1)  # the pipeline returns [0, 1]
    return torch.cat(images)


def _rounded(result: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value
            for key, value in result.items()}


def evaluate_adherence(pipe, n_prompts: int = 96,
                       guidance_scales=(1.0, 3.0, 5.0, 7.5, 12.0), steps: int = 25,
                       splits=("seen", "heldout"), seed: int = 0, scheduler: str | None = None,
                       batch_size: int = 128, progress: bool = False,
                       empty_prompt: bool = True) -> dict:
    """Adherence per split and guidance scale, and of the empty prompt.

    Args:
        pipe: a StableDiffusionPipeline of the shapes world.
        n_prompts: prompts per split (each split's combinations equally often).
        guidance_scales: w of classifier-free guidance; 1 is the conditional model alone.
        steps: sampling steps.
        scheduler: "ddim", "dpm++", ... (``model.make_scheduler``) to sample with instead of the
            pipeline's own (restored afterwards); None keeps it. These are samplers of the DDPM
            schedule: a flow-matching pipeline keeps its own (None).
        empty_prompt: also judge images of "" against the first split's prompts.

    Returns:
        {"seen": {w: {"color", "shape", "position", "all", "clean", "n"}}, "heldout": {...},
        "empty": {...}, "best": {split: (w, all)}, "steps", "scheduler", "seconds"}
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..models.pipelines import flow_ready
    from .model import make_scheduler

    original = flow_ready(pipe.scheduler)  # a flow pipeline loaded by diffusers alone, too
    if scheduler is not None and isinstance(original, FlowMatchEulerDiscreteScheduler):
        raise ValueError(f"a flow-matching pipeline samples with its own scheduler, not a "
                         f"sampler of the DDPM schedule ({scheduler!r})")
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, original.config)
    pipe.set_progress_bar_config(disable=not progress)
    start = time.perf_counter()
    try:
        results: dict = {"steps": steps, "scheduler": type(pipe.scheduler).__name__}
        for split in splits:
            prompts = evaluation_prompts(split, n_prompts, seed)
            results[split] = {
                float(w): _rounded(prompt_adherence(
                    generate(pipe, prompts, w, steps, seed, batch_size), prompts))
                for w in guidance_scales}
        if empty_prompt:
            prompts = evaluation_prompts(splits[0], n_prompts, seed)
            empty = generate(pipe, [""] * n_prompts, 1.0, steps, seed, batch_size)
            results["empty"] = _rounded(prompt_adherence(empty, prompts))
        results["best"] = {split: max(((w, r["all"]) for w, r in results[split].items()),
                                      key=lambda pair: pair[1]) for split in splits}
    finally:
        pipe.scheduler = original
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


@torch.no_grad()
def vae_ceiling(vae, n: int = 256, seed: int = 1234, split: str = "all") -> dict:
    """Adherence of the autoencoder's reconstructions D(mean of q(z | x)) of ``n`` fresh images
    (a seed training never used), judged against their captions: the best a pipeline can do."""
    images, captions = shapes_dataset(n, seed=seed, split=split)
    parameter = next(vae.parameters())
    latents = vae.encode(images.to(parameter.device, parameter.dtype)).latent_dist.mean
    reconstructions = vae.decode(latents).sample.float().cpu()
    return _rounded(prompt_adherence(reconstructions, captions))


def compare_samplers(pipe, guidance_scale: float, n_prompts: int = 96, seed: int = 0,
                     runs=(("ddim", 50), ("dpm++", 10), ("ddim", 10))) -> dict:
    """Adherence ("all", seen and held-out) of each (sampler, steps) in ``runs`` at one guidance
    scale, from the same start noise: does DPM-Solver++ at 10 steps match DDIM at 50?"""
    table = {}
    for kind, steps in runs:
        results = evaluate_adherence(pipe, n_prompts, (guidance_scale,), steps, seed=seed,
                                     scheduler=kind, empty_prompt=False)
        table[f"{kind}-{steps}"] = {split: results[split][float(guidance_scale)]["all"]
                                    for split in SPLITS}
    return table


def format_table(results: dict) -> str:
    """A plain-text table of ``evaluate_adherence``'s results, one row per split and scale."""
    header = f"{'prompts':<10}{'w':>6}" + "".join(f"{a:>10}" for a in ATTRIBUTES)
    lines = [f"{results['scheduler']}, {results['steps']} steps", header, "-" * len(header)]

    def row(name, w, r):
        return f"{name:<10}{w:>6}" + "".join(f"{r[a]:>10.1%}" for a in ATTRIBUTES)

    for split in SPLITS:
        for w, r in results.get(split, {}).items():
            lines.append(row(split, f"{w:g}", r))
    if "empty" in results:
        lines.append(row('""', "1", results["empty"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..models.pipelines import load_tiny_pipeline

    parser = argparse.ArgumentParser(prog="python -m course.tinysd.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="pipeline folder (default: the bundled one)")
    parser.add_argument("--n-prompts", type=int, default=96)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 3, 5, 7.5, 12])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--scheduler", choices=("ddim", "dpm++", "euler"), default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                        help="auto: float16 on a GPU, float32 on a CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-samplers", action="store_true",
                        help="also DDIM at 50 and 10 steps against DPM-Solver++ at 10")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    pipe = load_tiny_pipeline(args.path, device=args.device, dtype=dtype)
    results = evaluate_adherence(pipe, args.n_prompts, tuple(args.scales), args.steps,
                                 seed=args.seed, scheduler=args.scheduler)
    results["dtype"] = str(pipe.unet.dtype)
    results["vae_ceiling"] = vae_ceiling(pipe.vae)
    print(format_table(results), f"({results['dtype']}, {results['seconds']} s)")
    print(f"autoencoder ceiling (256 reconstructions): {results['vae_ceiling']}")
    if args.compare_samplers:
        best = results["best"]["seen"][0]
        results["samplers"] = compare_samplers(pipe, best, args.n_prompts, args.seed)
        for name, row in results["samplers"].items():
            print(f"{name:>10} at w={best:g}: " + ", ".join(f"{k} {v:.1%}"
                                                           for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
