"""Training recipes, on 🤗 accelerate: the same loop runs on a CPU, a GPU or several GPUs.

``python -m course train ddpm-shapes`` trains lesson 02's denoiser on the captioned-shapes world
and writes it into the package as safetensors, where lessons load it in FAST mode. Under
``accelerate launch`` the batch is split across processes and gradients are averaged; nothing in
the loop changes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .diffusion import forward_diffusion, make_beta_schedule
from .nets import TinyUNet
from .nets import TinyUNetConfig as UNetConfig


@dataclass
class DDPMRecipe:
    """Everything that decides what ``train_ddpm`` produces (stored with the weights)."""

    steps: int = 5886  # what 270 s on one H200 reached (``--time-limit 270``); hours on a CPU
    batch_size: int = 256
    lr: float = 1e-3  # constant after the warm-up, so a longer run extends a shorter one exactly
    warmup_steps: int = 100
    ema_decay: float = 0.999  # averaged weights sample cleaner images than the last step's
    dataset_size: int = 32768
    schedule: str = "linear"
    T: int = 1000
    seed: int = 0
    unet: UNetConfig = field(default_factory=UNetConfig)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unet"] = self.unet.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DDPMRecipe:
        data = dict(data)
        data["unet"] = UNetConfig.from_dict(data["unet"])
        return cls(**data)


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


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # ema = decay * ema + (1 - decay) * model, all parameters in one fused call
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()],
                             1 - decay)


def train_ddpm(recipe: DDPMRecipe, images: torch.Tensor | None = None,
               progress: bool = True, on_step=None,
               time_limit: float | None = None) -> TrainResult:
    """Train a TinyUNet to predict noise; returns its EMA weights and the loss of every step.

    images [N, 3, H, W] in [-1, 1]: the training set (the shapes world when None).
    on_step(step, ema, losses, seconds): called after every step with the EMA model (on the
    training device), the losses so far and the training time so far; for snapshots.
    time_limit: stop after this many seconds of training, even short of ``recipe.steps``.

    The learning rate is constant after the warm-up, so the first k steps of any run are exactly
    a k-step run: a snapshot at step k is what the recipe with ``steps=k`` produces.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = Accelerator()
    torch.manual_seed(recipe.seed)
    if images is None:
        from .data.shapes import shapes_dataset

        images, _ = shapes_dataset(recipe.dataset_size, seed=recipe.seed)
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

    def batches():  # the loader, epoch after epoch
        while True:
            yield from loader

    losses: list[float] = []
    bar = tqdm(total=recipe.steps, desc="training", disable=not (progress and
                                                                accelerator.is_main_process))
    start = time.perf_counter()
    seconds = 0.0
    for step, (x0,) in enumerate(batches(), start=1):
        loss = ddpm_loss(model, x0, betas, generator)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _ema_update(ema, accelerator.unwrap_model(model), recipe.ema_decay)
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        seconds = time.perf_counter() - start
        if on_step is not None:
            on_step(step, ema, losses, seconds)
        if step >= recipe.steps:
            break
        if time_limit is not None:  # every process stops at the same step, or DDP would hang
            over = torch.tensor(float(seconds > time_limit), device=accelerator.device)
            if accelerator.reduce(over, "max").item() > 0:
                break
    bar.close()
    return TrainResult(ema.cpu().eval(), losses, seconds, replace(recipe, steps=len(losses)),
                       str(accelerator.device))


def training_record(recipe: DDPMRecipe, losses: list[float], seconds: float, device: str) -> dict:
    """What a checkpoint stores about its training (read back by ``checkpoint_info``)."""
    tail = losses[-100:]
    return {"recipe": recipe.to_dict(), "train_seconds": round(seconds, 1),
            "final_loss": round(sum(tail) / len(tail), 5), "device": device,
            "torch": torch.__version__}


RECIPES = {"ddpm-shapes": DDPMRecipe}


def main(argv=None) -> int:
    from accelerate import PartialState

    from .models import USER_DIR, save_unet

    parser = argparse.ArgumentParser(prog="python -m course train", description=__doc__)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, help="override the recipe's number of steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", type=Path, help="where to write the safetensors file "
                        f"(default: {USER_DIR}/NAME.safetensors; load_unet takes that path)")
    parser.add_argument("--snapshot-every", type=int, metavar="N",
                        help="also write OUT-stepK.safetensors every N steps: each is exactly "
                        "what --steps K would write")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop after this much training and write what there is")
    args = parser.parse_args(argv)

    recipe = RECIPES[args.name]()
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key):
            setattr(recipe, key, getattr(args, key))
    out = args.out or USER_DIR / f"{args.name.replace('-', '_')}.safetensors"
    state = PartialState()  # under ``accelerate launch`` only the main process writes files

    def snapshot(step, ema, losses, seconds):
        if (args.snapshot_every and step % args.snapshot_every == 0 and step < recipe.steps
                and state.is_main_process):
            info = training_record(replace(recipe, steps=step), losses, seconds,
                                   str(state.device))
            path = save_unet(ema, out.with_name(f"{out.stem}-step{step}{out.suffix}"), info)
            print(json.dumps({"step": step, **{k: v for k, v in info.items() if k != "recipe"}}),
                  f"-> {path}", flush=True)

    result = train_ddpm(recipe, on_step=snapshot, time_limit=args.time_limit)
    if not state.is_main_process:
        return 0
    info = training_record(result.recipe, result.losses, result.seconds, result.device)
    save_unet(result.model, out, info)
    print(json.dumps({"step": result.recipe.steps,
                      **{k: v for k, v in info.items() if k != "recipe"}}))
    print(f"wrote {out}")
    return 0
