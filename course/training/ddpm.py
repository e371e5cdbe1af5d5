"""DDPM on the captioned-shapes world: lesson 02's teaching U-Net (``TinyUNet``), on 🤗 accelerate.

``python -m course train ddpm-shapes`` trains the denoiser and writes it as safetensors, where
lessons load it in FAST mode. The bundled checkpoint took 270 s on one GPU (its record says
"cuda", ``--time-limit 270``); on a laptop CPU the full recipe takes hours. Under ``accelerate
launch`` the batch is split across processes and gradients are averaged; nothing in the loop
changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ..diffusion import forward_diffusion, make_beta_schedule
from ..nets import TinyUNet, TinyUNetConfig
from .clock import Clock, batches
from .ema import ema_update
from .recipe import JSONRecipe, with_overrides
from .record import run_record
from .seeding import seeded


@dataclass
class DDPMRecipe(JSONRecipe):
    """Everything that decides what ``train_ddpm`` produces (stored with the weights)."""

    steps: int = 5886  # what 270 s on one GPU (cuda) reached (``--time-limit 270``)
    batch_size: int = 256
    lr: float = 1e-3  # constant after the warm-up, so a longer run extends a shorter one exactly
    warmup_steps: int = 100
    ema_decay: float = 0.999  # averaged weights sample cleaner images than the last step's
    dataset_size: int = 32768
    schedule: str = "linear"
    T: int = 1000
    seed: int = 0
    unet: TinyUNetConfig = field(default_factory=TinyUNetConfig)


def ddpm_loss(model: torch.nn.Module, x0: torch.Tensor, betas: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple DDPM objective: L = E_{t, eps} || eps - eps_theta(x_t, t) ||^2.

    x0 [B, C, H, W]: a batch of clean images; one random timestep per image.
    """
    t = torch.randint(0, len(betas), (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t, noise = forward_diffusion(x0, t, betas.to(x0.device), noise=noise)
    return F.mse_loss(model(x_t, t), noise)


@dataclass
class TrainResult:
    model: torch.nn.Module  # the EMA weights, on the CPU, in eval mode
    losses: list[float]
    seconds: float
    recipe: DDPMRecipe  # as run: ``steps`` is the number actually taken
    device: str  # where it trained


def train_ddpm(recipe: DDPMRecipe, images: torch.Tensor | None = None,
               progress: bool = True, on_step=None,
               time_limit: float | None = None) -> TrainResult:
    """Train a TinyUNet to predict noise; returns its EMA weights and the loss of every step.

    images [N, 3, H, W] in [-1, 1]: the training set (the shapes world when None).
    on_step(step, ema, losses, seconds): called after every step with the EMA model (on the
    training device), the losses so far and the training time so far; for snapshots.
    time_limit: stop after this many seconds of training, even short of ``recipe.steps``.

    The learning rate is constant after the warm-up, so the first k steps of any run are exactly
    a k-step run: a snapshot at step k is what the recipe with ``steps=k`` produces. The initial
    weights come from ``recipe.seed``; the caller's random state is left as it was.
    """
    from accelerate import Accelerator

    accelerator = Accelerator()
    with seeded(recipe.seed, accelerator.device):
        if images is None:
            from ..data.shapes import shapes_dataset

            images, _ = shapes_dataset(recipe.dataset_size, seed=recipe.seed)
        return _train(recipe, images, accelerator, progress, on_step, time_limit)


def _train(recipe: DDPMRecipe, images: torch.Tensor, accelerator, progress: bool, on_step,
           time_limit: float | None) -> TrainResult:
    from tqdm.auto import tqdm

    loader = DataLoader(TensorDataset(images), batch_size=recipe.batch_size, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(recipe.seed))
    model = TinyUNet(recipe.unet)
    ema = TinyUNet(recipe.unet)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)

    def learning_rate(step):  # linear warm-up, then constant
        return min(1.0, (step + 1) / recipe.warmup_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema.to(accelerator.device)
    betas = make_beta_schedule(recipe.schedule, recipe.T).to(accelerator.device)
    generator = torch.Generator().manual_seed(recipe.seed + 1 + accelerator.process_index)

    losses: list[float] = []
    bar = tqdm(total=recipe.steps, desc="training", disable=not (progress and
                                                                accelerator.is_main_process))
    clock = Clock(accelerator, time_limit)
    seconds = 0.0
    for step, (x0,) in enumerate(batches(loader), start=1):
        loss = ddpm_loss(model, x0, betas, generator)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(list(ema.parameters()), accelerator.unwrap_model(model).parameters(),
                   recipe.ema_decay)
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        seconds = clock.seconds
        if on_step is not None:
            on_step(step, ema, losses, seconds)
        if step >= recipe.steps or clock.over(step):
            break
    bar.close()
    return TrainResult(ema.cpu().eval(), losses, seconds, replace(recipe, steps=len(losses)),
                       str(accelerator.device))


def training_record(recipe: DDPMRecipe, losses: list[float], seconds: float, device) -> dict:
    """What a checkpoint stores about its training (read back by ``checkpoint_info``): the
    run record, with the final loss (mean of the last 100 steps)."""
    tail = losses[-100:]
    return run_record(recipe, seconds, device, final_loss=round(sum(tail) / len(tail), 5))


def add_arguments(parser) -> None:
    """The options of ``python -m course train ddpm-shapes``."""
    from ..models import USER_DIR

    parser.description = __doc__
    parser.add_argument("--steps", type=int, help="override the recipe's number of steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", type=Path, help="where to write the safetensors file "
                        f"(default: {USER_DIR}/ddpm_shapes.safetensors; load_unet takes that "
                        "path)")
    parser.add_argument("--snapshot-every", type=int, metavar="N",
                        help="also write OUT-stepK.safetensors every N steps: each is exactly "
                        "what --steps K would write")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop after this much training and write what there is")


def run(args) -> int:
    """Train with the options of ``add_arguments``; write the EMA weights (and snapshots)."""
    from accelerate import PartialState

    from ..models import USER_DIR, save_unet

    recipe = with_overrides(DDPMRecipe(), {"steps": args.steps, "batch_size": args.batch_size,
                                           "lr": args.lr})
    out = args.out or USER_DIR / "ddpm_shapes.safetensors"
    state = PartialState()  # under ``accelerate launch`` only the main process writes files

    def snapshot(step, ema, losses, seconds):
        if (args.snapshot_every and step % args.snapshot_every == 0 and step < recipe.steps
                and state.is_main_process):
            info = training_record(replace(recipe, steps=step), losses, seconds, state.device)
            path = save_unet(ema, out.with_name(f"{out.stem}-step{step}{out.suffix}"), info)
            print(json.dumps({"step": step, **{k: v for k, v in info.items() if k != "recipe"}}),
                  f"-> {path}", flush=True)

    result = train_ddpm(recipe, on_step=snapshot, time_limit=args.time_limit)
    if not state.is_main_process:
        return 0
    info = training_record(result.recipe, result.losses, result.seconds, state.device)
    save_unet(result.model, out, info)
    print(json.dumps({"step": result.recipe.steps,
                      **{k: v for k, v in info.items() if k != "recipe"}}))
    print(f"wrote {out}")
    return 0
