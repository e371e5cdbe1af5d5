"""Training recipes, on 🤗 accelerate: the same loop runs on a CPU, a GPU or several GPUs.

``python -m course train ddpm-shapes`` trains lesson 02's denoiser on the captioned-shapes world
and writes it into the package as safetensors, where lessons load it in FAST mode. Under
``accelerate launch`` the batch is split across processes and gradients are averaged; nothing in
the loop changes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .diffusion import forward_diffusion, make_beta_schedule
from .nets import TinyUNet, UNetConfig


@dataclass
class DDPMRecipe:
    """Everything that decides what ``train_ddpm`` produces (stored with the weights)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995  # averaged weights sample cleaner images than the last step's
    dataset_size: int = 8192
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
    recipe: DDPMRecipe


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # ema = decay * ema + (1 - decay) * model, parameter by parameter
    with torch.no_grad():
        for ema_p, p in zip(ema.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)


def train_ddpm(recipe: DDPMRecipe, images: torch.Tensor | None = None,
               progress: bool = True) -> TrainResult:
    """Train a TinyUNet to predict noise; returns its EMA weights and the loss of every step.

    images [N, 3, H, W] in [-1, 1]: the training set (the shapes world when None).
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

    def learning_rate(step):  # linear warm-up, then cosine decay to 10%
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress_ = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema.to(accelerator.device)
    betas = make_beta_schedule(recipe.schedule, recipe.T).to(accelerator.device)
    generator = torch.Generator().manual_seed(recipe.seed + 1 + accelerator.process_index)

    losses: list[float] = []
    bar = tqdm(total=recipe.steps, desc="training", disable=not (progress and
                                                                accelerator.is_main_process))
    start = time.perf_counter()
    step = 0
    while step < recipe.steps:
        for (x0,) in loader:
            loss = ddpm_loss(model, x0, betas, generator)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            _ema_update(ema, accelerator.unwrap_model(model), recipe.ema_decay)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
            if step >= recipe.steps:
                break
    bar.close()
    seconds = time.perf_counter() - start
    return TrainResult(ema.cpu().eval(), losses, seconds, recipe)


RECIPES = {"ddpm-shapes": DDPMRecipe}


def main(argv=None) -> int:
    from .models import BUNDLED_DIR, save_unet

    parser = argparse.ArgumentParser(prog="python -m course train", description=__doc__)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, help="override the recipe's number of steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--out", type=Path, help="where to write the safetensors file "
                        "(default: the package's bundled copy)")
    args = parser.parse_args(argv)

    recipe = RECIPES[args.name]()
    if args.steps:
        recipe.steps = args.steps
    if args.batch_size:
        recipe.batch_size = args.batch_size
    result = train_ddpm(recipe)
    out = args.out or BUNDLED_DIR / f"{args.name.replace('-', '_')}.safetensors"
    tail = result.losses[-100:]
    info = {"recipe": recipe.to_dict(), "train_seconds": round(result.seconds, 1),
            "final_loss": round(sum(tail) / len(tail), 5),
            "device": str(result.model.conv_in.weight.device), "torch": torch.__version__}
    save_unet(result.model, out, info)
    print(json.dumps({k: v for k, v in info.items() if k != "recipe"}))
    print(f"wrote {out}")
    return 0
