"""One round of reflow on the tiny flow pipeline: ``python -m course train reflow``.

Reflow (Liu, Gong and Liu 2022, *Flow Straight and Fast*, arXiv 2209.03003) retrains a flow model
on its own coupling. Flow matching pairs each image with independent noise, so the straight
lines of different pairs cross, and the learned field, their average, bends. The ODE of a trained
model pairs each noise z1 with the sample z0 it leads to; those pairs' lines cross far less, so a
model trained on them has straighter paths, and few Euler steps follow them better.

1. Pairs, from the teacher (``tiny-shapes-flow``): for captions c of the training split, start
   latents z1 ~ N(0, I) and z0 = ODE_teacher(z1 | c), its own sample (``pair_steps`` Euler steps
   at guidance ``pair_guidance``; 1 is the teacher's conditional field alone).
2. Fine-tune the teacher's U-Net on them (the text encoder stays frozen), the loss of flow
   matching with the pair in place of an independent (image, noise):

       z_sigma = (1 - sigma) z0 + sigma z1,   sigma ~ U(0, 1)
       L       = || (z1 - z0) - v_theta(z_sigma, 1000 sigma, E(c)) ||^2

   Captions drop to "" with probability ``cond_dropout``, as in the teacher's training, so that
   the unconditional branch of classifier-free guidance is retrained on the same pairs.

The pipeline is written like ``tiny-sd-flow``'s, with ``training.json`` recording both phases'
times. ``course.tinysd.flow_study`` measures what the round changes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.registry import USER_DIR
from .captions import PromptCache, drop_captions
from .clock import batches
from .recipe import JSONRecipe, with_overrides
from .record import Window, run_record
from .seeding import seeded
from .tiny_sd import LearningRate, TinySDResult

DEFAULT_OUTPUT = USER_DIR / "tiny-shapes-flow-reflow"


@dataclass
class ReflowRecipe(JSONRecipe):
    """Everything that decides what ``train_reflow`` produces (stored with the weights)."""

    teacher: str = "tiny-shapes-flow"  # a registry name or a pipeline folder
    seed: int = 0
    pairs: int = 8192  # (noise, sample) pairs drawn from the teacher
    pair_steps: int = 20  # Euler steps of the teacher's ODE per pair (100% adherence from 8)
    pair_guidance: float = 1.0  # 1: the teacher's own conditional field, one U-Net call a step
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-4  # a third of the teacher's peak: this is a fine-tune
    lr_schedule: str = "cosine"  # tiny-sd's LearningRate: warm-up, then decay to 0 at ``steps``
    warmup_steps: int = 50
    cond_dropout: float = 0.1


@torch.no_grad()
def teacher_pairs(pipe, recipe: ReflowRecipe, batch_size: int = 256,
                  progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(z1 [N, 4, h, w], z0 [N, 4, h, w], captions): start noise, the teacher's sample from it,
    and the caption it was drawn for. The latents are the U-Net's (scaled by the VAE's
    ``scaling_factor``), on the CPU; the same for the same recipe."""
    from tqdm.auto import tqdm

    from ..tinysd.evaluate import evaluation_prompts

    captions = evaluation_prompts("seen", recipe.pairs, seed=recipe.seed + 7)
    channels, side = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    noise = torch.randn(recipe.pairs, channels, side, side,
                        generator=torch.Generator().manual_seed(recipe.seed + 8))
    samples = []
    for start in tqdm(range(0, recipe.pairs, batch_size), desc="reflow pairs", leave=False,
                      disable=not progress):
        chunk = slice(start, start + batch_size)
        samples.append(pipe(captions[chunk], latents=noise[chunk].to(pipe.device),
                            guidance_scale=recipe.pair_guidance,
                            num_inference_steps=recipe.pair_steps,
                            output_type="latent").images.float().cpu())
    return noise, torch.cat(samples), captions


def reflow_loss(unet, z0: torch.Tensor, z1: torch.Tensor, states: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """Flow matching on coupled pairs: z0, z1 [B, 4, h, w], text states [B, L, width]."""
    sigma = torch.rand(len(z0), generator=generator, device=z0.device)  # [B]
    s = sigma.view(-1, 1, 1, 1)
    z_sigma = (1 - s) * z0 + s * z1  # the straight line between the pair
    target = z1 - z0  # its velocity, d z_sigma / d sigma
    return F.mse_loss(unet(z_sigma, sigma * 1000, encoder_hidden_states=states).sample, target)


def train_reflow(recipe: ReflowRecipe | None = None, device: str = "auto",
                 progress: bool = True):
    """Both phases. Returns a ``TinySDResult``: the pipeline with the fine-tuned U-Net (float32,
    eval) and the record ``training.json`` stores.

    device: "auto" (what accelerate picks) or "cpu". The caller's random state is left alone.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from ..models import load_pipeline

    recipe = recipe or ReflowRecipe()
    accelerator = Accelerator(cpu=device == "cpu")
    pipe = load_pipeline(recipe.teacher, device=accelerator.device, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    z1, z0, captions = teacher_pairs(pipe, recipe, progress=progress)
    pair_seconds = time.perf_counter() - start

    prompts = PromptCache(pipe.tokenizer)
    names = sorted(set(captions)) + [""]
    with torch.no_grad():  # the text encoder is frozen: each caption's states, once
        table = pipe.text_encoder(prompts(names, accelerator.device))[0]
    row_of = {name: i for i, name in enumerate(names)}

    with seeded(recipe.seed + 1, accelerator.device):
        unet = pipe.unet.train().requires_grad_(True)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=0.0)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(recipe.pairs)),
            batch_size=recipe.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(recipe.seed + 2))
        unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
        noise_generator = torch.Generator(accelerator.device).manual_seed(recipe.seed + 3)
        drop_generator = torch.Generator().manual_seed(recipe.seed + 4)
        learning_rate = LearningRate(recipe)
        window, tuned = Window(accelerator.device), time.perf_counter()
        bar = tqdm(total=recipe.steps, desc="reflow fine-tune", disable=not progress)
        for step, (rows,) in enumerate(batches(loader), start=1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step)
            rows = rows.cpu()
            texts = drop_captions([captions[i] for i in rows.tolist()], recipe.cond_dropout,
                                  drop_generator)
            states = table[torch.tensor([row_of[t] for t in texts])]
            loss = reflow_loss(unet, z0[rows].to(accelerator.device),
                               z1[rows].to(accelerator.device), states, noise_generator)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if (average := window.add(loss)) is not None:
                bar.set_postfix(loss=f"{average:.4f}")
            bar.update(1)
            if step >= recipe.steps:
                break
        window.flush()
        bar.close()
    tune_seconds = time.perf_counter() - tuned
    pipe.unet = accelerator.unwrap_model(unet).eval().requires_grad_(False)
    record = run_record(recipe, time.perf_counter() - start, accelerator.device,
                        ("diffusers", "transformers"),
                        pairs={"count": recipe.pairs, "seconds": round(pair_seconds, 1),
                               "captions": len(set(captions))},
                        fine_tune={"steps": recipe.steps, "seconds": round(tune_seconds, 1),
                                   "final_loss": window.means[-1] if window.means else None},
                        losses_every_50_steps=window.means)
    return TinySDResult(pipe, record)



def add_arguments(parser) -> None:
    """The options of ``python -m course train reflow``."""
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--teacher", help="the flow pipeline to straighten (registry name or "
                        "folder; default: tiny-shapes-flow)")
    parser.add_argument("--pairs", type=int, help="(noise, sample) pairs drawn from the teacher")
    parser.add_argument("--pair-steps", type=int, help="Euler steps per teacher sample")
    parser.add_argument("--pair-guidance", type=float, help="guidance of the teacher's samples")
    parser.add_argument("--steps", type=int, help="fine-tuning steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"folder for the pipeline (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Train with the options of ``add_arguments``; write the pipeline and its record."""
    from ..models.pipelines import save_tiny_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask the hub
    recipe = with_overrides(ReflowRecipe(), {
        "teacher": args.teacher, "pairs": args.pairs, "pair_steps": args.pair_steps,
        "pair_guidance": args.pair_guidance, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed})
    result = train_reflow(recipe, device=args.device, progress=not args.no_progress)
    save_tiny_pipeline(result.pipe, args.output, result.record)
    print(json.dumps({k: v for k, v in result.record.items()
                      if k not in ("recipe", "losses_every_50_steps")}))
    print(f"wrote {args.output}")
    return 0
