"""Training tiny Stable Diffusion on the captioned-shapes world, in two stages, on 🤗 accelerate.

Stage 1, the autoencoder. ``AutoencoderKL`` learns to squeeze images x [B, 3, 32, 32] into latents
z [B, 4, 16, 16] and back:

    L_vae = || D(z) - x ||^2 + kl_weight * KL(q(z | x) || N(0, I)),   z ~ q(z | x) = N(mu, sigma^2)

The KL term is tiny (1e-6): it only keeps the latents from drifting to huge values; the scale of the
latents is then fixed by ``scaling_factor`` = 1 / std of the latents, as in SD.

Stage 2, the text-conditioned denoiser. The autoencoder is frozen and the training images are
encoded once: z0 = scaling_factor * mean of q(z | x). SD draws z0 ~ q(z | x) instead, which is
the same thing for its autoencoder, whose posterior is narrow. This one's is not: with a KL weight
this small, a latent channel the decoder does not need drifts to the prior N(0, 1), and measured
over all channels the posterior's std (0.72) exceeded the spread of the means (0.59). Samples would
teach the denoiser to draw noise that the decoder ignores. With zero-terminal-SNR
``scaled_linear`` betas (see ``course.tinysd.model``), a timestep t ~ U{0..T-1} and eps ~ N(0, I):

    z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps
    v   = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z0                 (the v-prediction target)
    L   = || v - v_theta(z_t, t, E(tokens(caption))) ||^2

The text encoder E (a ``CLIPTextModel``) is trained jointly with the U-Net from random weights,
through this same loss. SD used a CLIP encoder pretrained contrastively on image-text pairs and
kept it frozen; here there are only 60 captions, so what a contrastive encoder would bring (words
that mean something) the denoising loss teaches directly, and one stage of training less keeps the
recipe short. Lesson 04 teaches the contrastive loss on its own.

The loss is the recipe's ``objective`` (``objectives.py``): this v-prediction, or flow matching's
velocity on the straight path (the ``tiny-sd-flow`` recipe, ``tiny_sd_flow.py``), everything else
shared.

Classifier-free guidance needs the unconditional model too, and it is the same network: with
probability ``cond_dropout`` (10%), chosen for each sample independently, the caption is replaced
by the empty prompt "". The sampler's unconditional branch encodes exactly "" (start token, end
token, padding), so training must drop to that, not to zeros or to a whole batch at once.

``python -m course train tiny-sd [--steps N] [--time-limit S] [--output DIR]`` runs both stages and
writes the pipeline with ``save_pretrained`` (float16 safetensors) plus ``training.json``. Under
``accelerate launch`` every process trains on its own batches of ``batch_size``, gradients are
averaged, and only the main process writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from copy import deepcopy
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ..models.pipelines import DEFAULT_OUTPUT, save_tiny_pipeline
from ..tinysd.model import (
    TinySDConfig,
    build_pipeline,
    make_text_encoder,
    make_unet,
    make_vae,
    set_latent_scale,
)
from ..tinysd.vocab import load_tokenizer
from .captions import PromptCache, drop_captions, loosen_captions
from .clock import Clock, batches
from .ema import ema_update, load_averaged, warmed_decay
from .objectives import make_objective
from .recipe import JSONRecipe, with_overrides
from .record import Window, run_record
from .seeding import seeded


@dataclass
class TinySDRecipe(JSONRecipe):
    """Everything that decides what ``train_tiny_sd`` produces (stored with the weights)."""

    model: TinySDConfig = field(default_factory=TinySDConfig)
    seed: int = 0
    dataset_size: int = 16384  # images of the "train" split, rendered once, used by both stages
    # stage 1: the autoencoder
    vae_steps: int = 800  # its reconstructions were already 100% right after 290 (and 1200)
    vae_batch_size: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    vae_time_share: float = 0.2  # of a time limit, the part stage 1 may use
    #: what stage 1 sees: "any-color" (the world's shapes in any colour, a quarter as outlines,
    #: ``shapes.autoencoder_dataset``), so that the decoder can draw what a fine-tune may ask for,
    #: as SD's autoencoder can; "world" (the captioned world itself, 4 colours, filled)
    vae_data: str = "any-color"
    # stage 2: U-Net and text encoder
    #: 100% adherence on a CPU probe (600 were enough); the bundled run's 1000 took 695 s on 2 CPU
    #: cores (957 s with stage 1: ``course/assets/tiny_shapes/training.json``)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine" decays to 0 at ``steps``; "constant" after warm-up
    warmup_steps: int = 100
    cond_dropout: float = 0.1  # per sample: the caption becomes "" (classifier-free guidance)
    #: per sample, the caption is swapped for another combination's: a loosely captioned dataset,
    #: as web alt-texts are (0: every caption says what its image shows)
    caption_noise: float = 0.0
    ema_decay: float = 0.0  # 0: no EMA; else decay of an exponential moving average of weights
    #: stop stage 2 after this many steps, the learning rate still following the schedule of
    #: ``steps``: an early checkpoint of the longer run (None: train all ``steps``)
    stop_after: int | None = None
    #: skip stage 1 and reuse the autoencoder of this pipeline (a registry name or a folder)
    vae_from: str | None = None
    #: what stage 2 learns (``objectives.OBJECTIVES``): "v-prediction" on the DDPM schedule,
    #: sampled with DDIM, or "flow" (flow matching: velocity eps - z0 on the straight path,
    #: sampled with ``FlowMatchEulerDiscreteScheduler``)
    objective: str = "v-prediction"
    #: how stage 2 draws noise levels: "uniform" (t ~ U{0..T-1}, or sigma ~ U(0, 1) for flow) or
    #: "logit-normal" (flow only: SD3's sigma = sigmoid(u), u ~ N(0, 1))
    time_sampling: str = "uniform"
    #: flow only: SD3's time shift, of the training sigmas and of the sampler's (1: none)
    flow_shift: float = 1.0


class LearningRate:
    """lr(step) = lr * warm-up * decay, set on the optimizer by hand at every step.

    warm-up: linear from lr / warmup to lr over the first ``warmup`` steps; decay: 1 ("constant")
    or 0.5 (1 + cos(pi * step / horizon)) ("cosine"), reaching 0 at ``horizon``. The horizon is
    ``recipe.steps``, or, under a time limit, the step the limit is expected to end the run at
    (``fit_to_time``), so that a timed run also ends with a decayed learning rate.
    """

    def __init__(self, recipe: TinySDRecipe):
        if recipe.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f'lr_schedule must be "constant" or "cosine", '
                             f"got {recipe.lr_schedule!r}")
        self.lr, self.warmup, self.schedule = recipe.lr, recipe.warmup_steps, recipe.lr_schedule
        self.horizon = self.horizon_limit = recipe.steps

    def __call__(self, step: int) -> float:
        warm = min(1.0, step / max(1, self.warmup))
        if self.schedule == "constant":
            return self.lr * warm
        return self.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.horizon)))

    def fit_to_time(self, step: int, seconds_per_step: float, seconds_left: float,
                    accelerator) -> None:
        """Move the horizon to where the time left runs out (the earliest over all processes,
        which then agree), never beyond ``recipe.steps``."""
        expected = min(step + int(seconds_left / max(seconds_per_step, 1e-9)), self.horizon_limit)
        negated = torch.tensor(-float(expected), device=accelerator.device)
        earliest = -accelerator.reduce(negated, "max").item()  # accelerate has no "min"
        self.horizon = max(step + 1, int(earliest))


class _AutoencoderLoss(torch.nn.Module):
    """x -> (D(z), KL(q(z | x) || N(0, I)) per image) with z ~ q(z | x): encoding and decoding in
    one ``forward``, so that a DistributedDataParallel wrapper sees (and synchronises) both."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.vae.decode(z).sample, posterior.kl()


def train_vae(recipe: TinySDRecipe, images: torch.Tensor, accelerator,
              time_limit: float | None = None, progress: bool = True) -> dict:
    """Stage 1 on ``images`` [N, 3, H, W] in [-1, 1]; returns {"vae" (unwrapped, eval, frozen),
    "losses" (reconstruction MSE, means of 50 steps), "seconds", "steps"}. The initial weights
    come from ``recipe.seed``; the caller's random state is left as it was."""
    from tqdm.auto import tqdm

    with seeded(recipe.seed, accelerator.device):
        model = _AutoencoderLoss(make_vae(recipe.model))
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
        loader = DataLoader(TensorDataset(images), batch_size=recipe.vae_batch_size,
                            shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(recipe.seed))
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        generator = torch.Generator(accelerator.device).manual_seed(
            recipe.seed + accelerator.process_index)
        clock, window = Clock(accelerator, time_limit, every=10), Window(accelerator.device)
        bar = tqdm(total=recipe.vae_steps, desc="stage 1: autoencoder",
                   disable=not (progress and accelerator.is_main_process))
        step = 0
        for step, (x,) in enumerate(batches(loader), start=1):
            reconstruction, kl = model(x, generator)
            mse = F.mse_loss(reconstruction, x)
            loss = mse + recipe.kl_weight * kl.mean()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if (average := window.add(mse)) is not None:
                bar.set_postfix(mse=f"{average:.5f}")
            bar.update(1)
            if step >= recipe.vae_steps or clock.over(step):
                break
    window.flush()
    bar.close()
    vae = accelerator.unwrap_model(model).vae.eval().requires_grad_(False)
    return {"vae": vae, "losses": window.means, "seconds": clock.seconds, "steps": step}


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, device, batch_size: int = 1024) -> torch.Tensor:
    """The mean of q(z | x) for images [N, 3, H, W]: [N, 4, H / f, W / f], on ``device``."""
    return torch.cat([vae.encode(chunk.to(device)).latent_dist.mean
                      for chunk in images.split(batch_size)])


@dataclass
class _Denoiser:
    """Stage 2's networks, optimizer, data and random generators, built under the seed."""

    unet: torch.nn.Module  # prepared by accelerate (possibly wrapped)
    text_encoder: torch.nn.Module
    tokenizer: object
    params: list[torch.Tensor]  # the unwrapped networks' parameters, U-Net first
    optimizer: torch.optim.Optimizer
    loader: DataLoader  # of rows into the training set
    names: list[str]  # the distinct captions
    index: torch.Tensor  # [N]: each training image's caption, as an index into ``names``
    ema: list[torch.Tensor] | None
    generators: dict[str, torch.Generator]  # "noise" (on the device), "drop", "loosen"

    @classmethod
    def build(cls, recipe: TinySDRecipe, captions: list[str], accelerator) -> _Denoiser:
        tokenizer = load_tokenizer(max_length=recipe.model.text.max_length)
        text_encoder = make_text_encoder(recipe.model, tokenizer)
        unet = make_unet(recipe.model)
        params = list(unet.parameters()) + list(text_encoder.parameters())
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
        names = sorted(set(captions))
        index = torch.tensor([names.index(c) for c in captions])
        loader = DataLoader(TensorDataset(torch.arange(len(captions))),
                            batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(recipe.seed + 1))
        unet, text_encoder, optimizer, loader = accelerator.prepare(
            unet, text_encoder, optimizer, loader)
        ema = [p.detach().clone() for p in params] if recipe.ema_decay > 0 else None
        rank = accelerator.process_index
        generators = {
            "noise": torch.Generator(accelerator.device).manual_seed(recipe.seed + 2 + rank),
            "drop": torch.Generator().manual_seed(recipe.seed + 3 + rank),
            "loosen": torch.Generator().manual_seed(recipe.seed + 4 + rank)}
        return cls(unet, text_encoder, tokenizer, params, optimizer, loader, names, index, ema,
                   generators)

    def captions_of(self, rows: torch.Tensor, recipe: TinySDRecipe) -> list[str]:
        """The captions the batch ``rows`` trains on: loosened, then dropped to ""."""
        captions = [self.names[i] for i in self.index[rows.cpu()].tolist()]
        if recipe.caption_noise > 0:
            captions = loosen_captions(captions, recipe.caption_noise, self.names,
                                       self.generators["loosen"])
        return drop_captions(captions, recipe.cond_dropout, self.generators["drop"])

    def snapshot(self, accelerator, copy: bool = True):
        """(unet, text_encoder) unwrapped, in eval mode, holding the EMA weights when there are:
        copies (training goes on), or the networks themselves (``copy=False``, at the end)."""
        networks = [accelerator.unwrap_model(self.unet),
                    accelerator.unwrap_model(self.text_encoder)]
        if copy:
            networks = [deepcopy(n) for n in networks]
        if self.ema is not None:
            load_averaged(networks, self.ema)
        return [n.eval() for n in networks]


def train_denoiser(recipe: TinySDRecipe, vae, images: torch.Tensor, captions: list[str],
                   accelerator, time_limit: float | None = None, progress: bool = True,
                   on_step=None) -> dict:
    """Stage 2: U-Net and text encoder on the frozen ``vae``'s latents of ``images`` with their
    ``captions``. The initial weights come from ``recipe.seed + 1``; the caller's random state
    is left as it was.

    on_step(step, snapshot): called after every step; ``snapshot()`` returns copies of
    (unet, text_encoder) as they would be saved now (EMA weights when there are), for snapshots
    and evaluations during training.

    Returns {"unet", "text_encoder", "tokenizer" (unwrapped, eval; the EMA weights when
    ``recipe.ema_decay`` > 0), "losses", "seconds", "steps", "scaling_factor", "lr_horizon"}.
    """
    from tqdm.auto import tqdm

    clock = Clock(accelerator, time_limit, every=10)
    device = accelerator.device
    vae.to(device)
    latents = encode_images(vae, images, device)
    scaling_factor = set_latent_scale(vae, latents)
    latents = latents * scaling_factor  # [N, 4, h, w], unit variance

    with seeded(recipe.seed + 1, device):
        parts = _Denoiser.build(recipe, captions, accelerator)
        prompts, learning_rate = PromptCache(parts.tokenizer), LearningRate(recipe)
        objective = make_objective(recipe)  # the loss: v-prediction or flow matching
        window = Window(device)
        bar = tqdm(total=recipe.steps, desc="stage 2: U-Net + text encoder",
                   disable=not (progress and accelerator.is_main_process))
        step, loop_start = 0, None
        parts.unet.train()
        parts.text_encoder.train()
        for step, (rows,) in enumerate(batches(parts.loader), start=1):
            if step == 21:  # the first steps are slow (allocation, autotuning): time from here
                loop_start = time.perf_counter()
            if (time_limit is not None and loop_start is not None and step % 100 == 0
                    and recipe.lr_schedule == "cosine"):
                learning_rate.fit_to_time(step, (time.perf_counter() - loop_start) / (step - 21),
                                          time_limit - clock.seconds, accelerator)
            for group in parts.optimizer.param_groups:
                group["lr"] = learning_rate(step)
            rows = rows.to(device)
            # E(caption) [B, L, width], then L for the batch's latents z0 [B, 4, h, w]
            states = parts.text_encoder(prompts(parts.captions_of(rows, recipe), device))[0]
            loss = objective(parts.unet, latents[rows], states, parts.generators["noise"])
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(parts.params, 1.0)
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            if parts.ema is not None:
                ema_update(parts.ema, parts.params, warmed_decay(recipe.ema_decay, step))
            if (average := window.add(loss)) is not None:
                bar.set_postfix(loss=f"{average:.4f}")
            bar.update(1)
            if on_step is not None:
                on_step(step, lambda: parts.snapshot(accelerator))
            if step >= min(recipe.steps, recipe.stop_after or recipe.steps) or clock.over(step):
                break
    window.flush()
    bar.close()
    unet, text_encoder = parts.snapshot(accelerator, copy=False)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": parts.tokenizer,
            "losses": window.means, "seconds": clock.seconds, "steps": step,
            "scaling_factor": scaling_factor, "lr_horizon": learning_rate.horizon}


@dataclass
class TinySDResult:
    pipe: object  # the StableDiffusionPipeline, on the training device, float32
    record: dict  # what ``training.json`` stores


def train_tiny_sd(recipe: TinySDRecipe | None = None, time_limit: float | None = None,
                  device: str = "auto", mixed_precision: str = "no",
                  progress: bool = True, on_step=None) -> TinySDResult:
    """Both stages. ``time_limit`` (seconds) bounds the whole training, data included: stage 1
    may use ``recipe.vae_time_share`` of it, stage 2 what is left; each stops cleanly at a step.

    device: "auto" (what accelerate picks: the GPUs under ``accelerate launch``), or "cpu".
    on_step: see ``train_denoiser``.
    """
    from accelerate import Accelerator

    from ..data.shapes import autoencoder_dataset, shapes_dataset

    recipe = recipe or TinySDRecipe()
    sampler = make_objective(recipe).sampler()  # an unknown objective fails before any work
    if recipe.vae_data not in ("any-color", "world"):
        raise ValueError(f'vae_data must be "any-color" or "world", got {recipe.vae_data!r}')
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    start = time.perf_counter()
    images, captions = shapes_dataset(recipe.dataset_size, seed=recipe.seed,
                                      size=recipe.model.image_size, split="train")
    vae_images = images if recipe.vae_data == "world" or recipe.vae_from else autoencoder_dataset(
        recipe.dataset_size, seed=recipe.seed, size=recipe.model.image_size)
    vae_limit = None if time_limit is None else recipe.vae_time_share * time_limit
    if recipe.vae_from is not None:
        stage1 = reused_vae(recipe.vae_from)
    else:
        stage1 = train_vae(recipe, vae_images, accelerator, vae_limit, progress)
    left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - start))
    stage2 = train_denoiser(recipe, stage1["vae"], images, captions, accelerator, left, progress,
                            on_step)
    seconds = time.perf_counter() - start
    pipe = build_pipeline(stage1["vae"], stage2["text_encoder"], stage2["tokenizer"],
                          stage2["unet"], sampler)
    pipe.set_progress_bar_config(disable=True)
    ran = replace(recipe, vae_steps=stage1["steps"],
                  **({"stop_after": stage2["steps"]} if recipe.stop_after else
                     {"steps": stage2["steps"]}))
    record = training_record(ran, recipe, stage1, stage2, seconds, accelerator, time_limit)
    return TinySDResult(pipe, record)


def reused_vae(source: str) -> dict:
    """Stage 1 skipped: the autoencoder of the pipeline ``source`` (registry name or folder),
    float32, frozen, in the form ``train_vae`` returns."""
    from diffusers import AutoencoderKL

    from ..models import load_pipeline

    loaded = load_pipeline(source, device="cpu").vae
    # a fresh module from the config, so that the folder it came from is not saved with it; its
    # random initial weights, replaced at once, are drawn without touching the caller's state
    config = {k: v for k, v in loaded.config.items() if k != "_name_or_path"}
    with torch.random.fork_rng(devices=[]):
        vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(loaded.float().state_dict())
    vae = vae.eval().requires_grad_(False)
    return {"vae": vae, "losses": [], "seconds": 0.0, "steps": 0, "from": source}


def training_record(ran: TinySDRecipe, asked: TinySDRecipe, stage1: dict, stage2: dict,
                    seconds: float, accelerator, time_limit: float | None) -> dict:
    """The JSON stored next to the weights: the recipe as run (steps actually taken), what was
    asked for, times, final losses (mean of the last 50 steps), device and versions."""
    stopped = ((ran.vae_steps < asked.vae_steps and not asked.vae_from) or ran.steps < asked.steps
               or (ran.stop_after or 0) < (asked.stop_after or 0))
    return run_record(
        ran, seconds, accelerator.device, ("diffusers", "transformers"),
        requested={"vae_steps": asked.vae_steps, "steps": asked.steps, "time_limit": time_limit},
        stopped_by_time_limit=stopped,
        vae={"steps": stage1["steps"], "seconds": round(stage1["seconds"], 1),
             "final_mse": stage1["losses"][-1] if stage1["losses"] else None}
        | ({"from": stage1["from"]} if "from" in stage1 else {}),
        denoiser={"steps": stage2["steps"], "seconds": round(stage2["seconds"], 1),
                  "final_loss": stage2["losses"][-1] if stage2["losses"] else None,
                  "scaling_factor": round(stage2["scaling_factor"], 5),
                  "lr_horizon": stage2["lr_horizon"]},
        losses_every_50_steps={"vae": stage1["losses"], "denoiser": stage2["losses"]},
        processes=accelerator.num_processes)


def add_arguments(parser, output: Path = DEFAULT_OUTPUT) -> None:
    """The options of ``python -m course train tiny-sd``; ``output``: the default folder."""
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--steps", type=int, help="stage 2 steps (U-Net + text encoder)")
    parser.add_argument("--vae-steps", type=int, help="stage 1 steps (autoencoder)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop stage 2 after N steps, the learning rate still scheduled for "
                        "--steps (an early checkpoint)")
    parser.add_argument("--caption-noise", type=float, metavar="P",
                        help="swap each training caption for another with probability P")
    parser.add_argument("--vae-from", metavar="PIPELINE",
                        help="skip stage 1 and reuse this pipeline's autoencoder (a registry "
                        "name such as tiny-shapes, or a folder)")
    parser.add_argument("--batch-size", type=int, help="stage 2 batch, per process")
    parser.add_argument("--vae-batch-size", type=int)
    parser.add_argument("--dataset-size", type=int, help="training images rendered")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--ema", type=float, metavar="DECAY", help="EMA decay (0: off)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop both stages within this much training and save what there is")
    parser.add_argument("--output", type=Path, default=output,
                        help=f"folder for the pipeline (default: {output})")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="auto: a GPU when there is one (all of them under accelerate launch)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--no-progress", action="store_true")


def run(args, base: TinySDRecipe | None = None, **fields) -> int:
    """Train with the options of ``add_arguments``, on the recipe ``base`` (default
    ``TinySDRecipe()``) with ``fields`` set (None: left as they are); write the pipeline and its
    record."""
    from accelerate import PartialState

    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.cuda.is_available():  # small convolutions: let cuDNN pick, and allow TF32
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask the hub
    recipe = with_overrides(base or TinySDRecipe(), fields | {
        "steps": args.steps, "vae_steps": args.vae_steps, "batch_size": args.batch_size,
        "vae_batch_size": args.vae_batch_size, "dataset_size": args.dataset_size,
        "lr": args.lr, "ema_decay": args.ema, "seed": args.seed, "stop_after": args.stop_after,
        "vae_from": args.vae_from, "caption_noise": args.caption_noise})
    result = train_tiny_sd(recipe, time_limit=args.time_limit, device=args.device,
                           mixed_precision=args.mixed_precision, progress=not args.no_progress)
    if PartialState().is_main_process:
        save_tiny_pipeline(result.pipe, args.output, result.record)
        summary = {k: v for k, v in result.record.items()
                   if k not in ("recipe", "losses_every_50_steps")}
        print(json.dumps(summary))
        print(f"wrote {args.output}")
    return 0
