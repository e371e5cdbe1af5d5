"""Fine-tuning tiny Stable Diffusion on a few images: LoRA with peft, or every weight.

Two adapters teach the bundled pipeline something its 60 captions never showed (their images:
``course.training.adapters``):

- ``purple``: a new colour word. The tokenizer splits "purple" into five pieces (p, u, r, p,
  le) whose embeddings no caption ever trained, much as DreamBooth binds a rare token to a new
  subject. 32 images of purple shapes, on 7 of the 15 shape x position combinations;
- ``outline``: a style with no trigger word. 32 images of ordinary captions, drawn as 2-pixel
  outlines; while the adapter is active, every prompt draws outlines.

The loss is the base model's own (``course.training.tiny_sd``): v-prediction on latents z0 = the
mean of q(z | x) times the scaling factor, zero-terminal-SNR schedule,

    L = || v - v_theta(z_t, t, E(caption)) ||^2,   v = sqrt(a_t) eps - sqrt(1 - a_t) z0.

With LoRA only the adapter's A and B get gradients: ``unet.add_adapter(LoraConfig(...))`` as
diffusers' LoRA training scripts do, and optionally the text encoder's attention too (a new word
may need it). ``method="full"`` trains every U-Net and text-encoder weight instead (DreamBooth's
fine-tuning); ``prior_weight`` > 0 adds DreamBooth's prior-preservation loss: images the base
model drew for base-world captions, trained on as they are, so the model keeps what it knew.

``python -m course train lora --adapter purple|outline`` trains one and writes it in diffusers'
LoRA format (``save_lora_weights``: ``pytorch_lora_weights.safetensors``). On a GPU it computes
in bf16 (the frozen weights are cast to bf16, the trainable ones stay float32); under
``accelerate launch`` every process trains on its own batches and gradients are averaged.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..lora import ATTENTION_TARGETS
from ..models.registry import USER_DIR as DEFAULT_HOME
from .adapters import adapter_dataset, loss_figure, prior_dataset, save_adapter, trainable_count
from .captions import PromptCache, drop_captions
from .recipe import JSONRecipe, with_overrides
from .record import run_record
from .seeding import seeded

#: text-encoder layers a LoRA adapts (transformers' CLIP attention), as diffusers' scripts do
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
#: the tiny U-Net's top level (16x16 latents) has no attention: its convolutions draw the fine
#: detail (an exact colour, a 2-pixel line), so an adapter that must change them targets them
TOP_LEVEL_CONVS = ("down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.conv2",
                   "up_blocks.2.resnets.0.conv1", "up_blocks.2.resnets.0.conv2",
                   "up_blocks.2.resnets.1.conv1", "up_blocks.2.resnets.1.conv2", "conv_out")
CROSS_ATTENTION = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
#: the target sets the lesson compares (module Q4: which layers should LoRA adapt?)
TARGET_SETS = {
    "cross-attention k, v": ("attn2.to_k", "attn2.to_v"),
    "all attention": ATTENTION_TARGETS,
    "attention + proj + ff": ATTENTION_TARGETS + ("proj_in", "proj_out", "ff.net.0.proj",
                                                  "ff.net.2"),
    "top convs": TOP_LEVEL_CONVS,
    "cross-attention + top convs": CROSS_ATTENTION + TOP_LEVEL_CONVS,
}


@dataclass
class LoRARecipe(JSONRecipe):
    """Everything that decides what ``train_adapter`` produces (stored with the adapter).

    The defaults are the bundled adapters' recipe; ``for_adapter`` adds what differs between
    them.
    """

    adapter: str = "purple"
    method: str = "lora"  # "lora", or "full" (every U-Net and text-encoder weight)
    rank: int = 2
    alpha: float = 2.0  # scale alpha / rank = 1
    targets: tuple[str, ...] = CROSS_ATTENTION + TOP_LEVEL_CONVS
    text_encoder_rank: int = 4  # 0: the text encoder stays frozen
    n_images: int = 32
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3  # LoRA; full fine-tuning uses lr / 10 unless told otherwise
    #: "cosine": lr * (1 + cos(pi * step / steps)) / 2 after a 20-step warm-up, ending at 0:
    #: with a constant rate the new colour still swings from one checkpoint to the next
    lr_schedule: str = "cosine"
    #: per caption of a prior (class) image: "" instead, as in the base training, so that the
    #: unconditional model, the other half of classifier-free guidance, stays the base model's.
    #: Never for the new images: "" would then learn to draw purple, and guidance, which pushes
    #: away from the unconditional prediction, would push every other colour off its hue.
    cond_dropout: float = 0.1
    #: the same for the new images; None: 0.1 for a style with no trigger word ("outline": it
    #: should apply to the unconditional model too), 0 for a new word ("purple")
    instance_dropout: float | None = None
    prior_weight: float = 0.0  # DreamBooth prior preservation (full or LoRA); 0: off
    prior_images: int = 64
    seed: int = 0
    base: str = "tiny-shapes"
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_adapter(cls, adapter: str, **changes) -> LoRARecipe:
        """The bundled recipe of ``adapter``: purple adds text-encoder LoRA (the new word lives
        there) and prior preservation (to keep blue blue); outline, a style with no trigger,
        needs neither. It adapts only the top-level convolutions, where a 2-pixel line is
        drawn, at a higher rank and for longer: it then leaves cross-attention, where purple
        binds its word, to purple, and the two mix better."""
        own = {"purple": {"text_encoder_rank": 4, "prior_weight": 1.0, "steps": 1000},
               "outline": {"text_encoder_rank": 0, "prior_weight": 0.0, "steps": 3000,
                           "targets": TOP_LEVEL_CONVS, "rank": 5, "alpha": 5.0}}
        if adapter not in own:
            raise ValueError(f'adapter must be "purple" or "outline", got {adapter!r}')
        return replace(cls(adapter=adapter, **own[adapter]), **changes)

    def dropout(self) -> float:
        """The caption dropout of the new images (``instance_dropout``, or its default)."""
        if self.instance_dropout is not None:
            return self.instance_dropout
        return 0.1 if self.adapter == "outline" else 0.0

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` (from 0) as a multiple of lr: a 20-step linear warm-up,
        then 1 ("constant") or 0.5 (1 + cos(pi * step / steps)) ("cosine")."""
        warm = min(1.0, (step + 1) / 20)
        if self.lr_schedule == "constant":
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.steps)))


@dataclass
class AdapterResult:
    pipe: object  # the base pipeline with the adapter loaded (LoRA) or the fine-tuned weights
    losses: list[float]  # mean of every 10 steps
    seconds: float
    record: dict


def _encode(pipe, images, device):
    """z0 = scaling_factor * mean of q(z | x), as the base model was trained: [n, 4, 16, 16]."""
    with torch.no_grad():
        latents = pipe.vae.encode(images.to(device, pipe.vae.dtype)).latent_dist.mean
    return latents.float() * pipe.vae.config.scaling_factor


def attach_lora(pipe, recipe: LoRARecipe, adapter_name: str = "default") -> list:
    """Add peft LoRA layers (Gaussian-initialised A, zero B) to the U-Net, and to the text
    encoder when ``recipe.text_encoder_rank`` > 0; returns the trainable parameters."""
    from ..lora import lora_config

    pipe.unet.add_adapter(lora_config(recipe.rank, recipe.alpha, recipe.targets),
                          adapter_name=adapter_name)
    if recipe.text_encoder_rank:
        from peft import inject_adapter_in_model

        # peft itself: transformers' own ``add_adapter`` asks for a newer peft than diffusers'
        inject_adapter_in_model(lora_config(recipe.text_encoder_rank,
                                            float(recipe.text_encoder_rank), TEXT_TARGETS),
                                pipe.text_encoder, adapter_name=adapter_name)
    return [p for network in (pipe.unet, pipe.text_encoder) for p in network.parameters()
            if p.requires_grad]


def _trainable(pipe, recipe: LoRARecipe, mixed_precision: str) -> tuple[list, float]:
    """Freeze what stays fixed; returns (the trained parameters, their learning rate). In bf16
    the networks compute in bf16 while the trained weights stay float32."""
    pipe.vae.requires_grad_(False)
    if recipe.method == "lora":
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        params, lr = attach_lora(pipe, recipe), recipe.lr
    else:
        pipe.unet.requires_grad_(True)
        pipe.text_encoder.requires_grad_(True)
        params = [p for n in (pipe.unet, pipe.text_encoder) for p in n.parameters()]
        lr = recipe.extra.get("full_lr", recipe.lr / 10)
    if mixed_precision == "bf16":
        from diffusers.training_utils import cast_training_params

        for network in (pipe.unet, pipe.text_encoder):
            network.to(dtype=torch.bfloat16)
            cast_training_params(network, dtype=torch.float32)  # the trained weights stay fp32
    return params, lr


class _VLoss:
    """L = || v - v_theta(z_t, t, E(caption)) ||^2 on a batch of latents z0 [B, 4, h, w], with
    t and eps drawn from ``generator``."""

    def __init__(self, unet, text_encoder, tokenizer, generator: torch.Generator):
        from ..tinysd.model import make_noise_scheduler

        self.unet, self.text_encoder, self.generator = unet, text_encoder, generator
        self.prompts = PromptCache(tokenizer)
        self.noise_scheduler = make_noise_scheduler()

    def __call__(self, z0: torch.Tensor, captions: list[str]) -> torch.Tensor:
        T = self.noise_scheduler.config.num_train_timesteps
        noise = torch.randn(z0.shape, generator=self.generator, device=z0.device)
        t = torch.randint(0, T, (len(z0),), generator=self.generator, device=z0.device)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        v = self.noise_scheduler.get_velocity(z0, noise, t)  # sqrt(a) eps - sqrt(1 - a) z0
        states = self.text_encoder(self.prompts(captions, z0.device))[0]  # [B, L, width]
        prediction = self.unet(z_t, t, encoder_hidden_states=states).sample
        return F.mse_loss(prediction.float(), v.float())


def train_adapter(recipe: LoRARecipe, pipe=None, progress: bool = True, on_step=None,
                  mixed_precision: str = "no", device: str = "auto",
                  data: tuple[torch.Tensor, list[str]] | None = None) -> AdapterResult:
    """Fine-tune ``pipe`` (default: a fresh copy of ``recipe.base`` on the CPU) in place.

    data: (images [n, 3, 32, 32] in [-1, 1], captions) to learn from instead of
    ``adapter_dataset(recipe.adapter)``.
    on_step(step, loss): after every step (loss is a float only every 10 steps, else None).
    mixed_precision: "no" or "bf16" (GPU): frozen weights in bf16, trainable ones in float32.
    The LoRA weights' initial values come from ``recipe.seed``; the caller's random state is
    left as it was.
    """
    from accelerate import Accelerator

    from ..models import load_pipeline

    if recipe.method not in ("lora", "full"):
        raise ValueError(f'method must be "lora" or "full", got {recipe.method!r}')
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    with seeded(recipe.seed, accelerator.device):
        if pipe is None:
            pipe = load_pipeline(recipe.base, device="cpu", dtype=torch.float32)
        pipe.to(accelerator.device)
        images, captions = data or adapter_dataset(recipe.adapter, recipe.n_images, recipe.seed)
        prior = None
        if recipe.prior_weight > 0:
            prior_images, prior_captions = prior_dataset(pipe, recipe.prior_images)
            prior = (_encode(pipe, prior_images, accelerator.device), prior_captions)
        latents = _encode(pipe, images, accelerator.device)
        params, lr = _trainable(pipe, recipe, mixed_precision)
        losses, seconds = _fit(recipe, pipe, params, lr, (latents, captions), prior, accelerator,
                               progress, on_step)
    for network in (pipe.unet, pipe.text_encoder):
        network.requires_grad_(False)
        if mixed_precision == "bf16":
            network.to(dtype=torch.float32)
    record = run_record(recipe, seconds, accelerator.device, ("diffusers", "peft"),
                        final_loss=losses[-1] if losses else None, losses_every_10_steps=losses,
                        parameters=trainable_count(pipe) if recipe.method == "lora" else None,
                        mixed_precision=accelerator.mixed_precision)
    return AdapterResult(pipe, losses, seconds, record)


def _fit(recipe: LoRARecipe, pipe, params: list, lr: float, instances: tuple, prior,
         accelerator, progress: bool, on_step) -> tuple[list[float], float]:
    """The training loop on ``instances`` (latents [n, 4, h, w], captions) and, with
    ``recipe.prior_weight``, the ``prior`` class images; leaves the trained networks, unwrapped
    and in eval mode, in ``pipe``. Returns (mean loss of every 10 steps, seconds)."""
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    latents, captions = instances
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    rows = torch.arange(len(captions))
    loader = DataLoader(TensorDataset(rows), batch_size=min(recipe.batch_size, len(rows)),
                        shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(recipe.seed))
    # the schedule is not prepared: accelerate would step it once per process, every step
    unet, text_encoder, optimizer, loader = accelerator.prepare(
        pipe.unet, pipe.text_encoder, optimizer, loader)
    generator = torch.Generator(accelerator.device).manual_seed(
        recipe.seed + 1 + accelerator.process_index)
    drop_generator = torch.Generator().manual_seed(recipe.seed + 2 + accelerator.process_index)
    v_loss = _VLoss(unet, text_encoder, pipe.tokenizer, generator)

    def loss_of(batch):
        loss = v_loss(latents[batch], drop_captions([captions[i] for i in batch.tolist()],
                                                    recipe.dropout(), drop_generator))
        if prior is not None:  # as many class images as instance images
            pick = torch.randint(0, len(prior[1]), (len(batch),), generator=generator,
                                 device=accelerator.device)
            kept = drop_captions([prior[1][i] for i in pick.tolist()], recipe.cond_dropout,
                                 drop_generator)
            loss = loss + recipe.prior_weight * v_loss(prior[0][pick], kept)
        return loss

    unet.train()
    text_encoder.train()
    losses, window = [], []
    bar = tqdm(total=recipe.steps, desc=f"{recipe.method} {recipe.adapter}",
               disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    step = 0
    while step < recipe.steps:
        for (batch,) in loader:
            with accelerator.autocast():
                loss = loss_of(batch.to(accelerator.device))
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(loss.detach())
            reported = None
            if len(window) == 10:
                reported = round(torch.stack(window).mean().item(), 5)
                losses.append(reported)
                window = []
                bar.set_postfix(loss=f"{reported:.4f}")
            bar.update(1)
            if on_step is not None:
                on_step(step, reported)
            if step >= recipe.steps:
                break
    bar.close()
    seconds = time.perf_counter() - start
    pipe.unet = accelerator.unwrap_model(unet).eval()
    pipe.text_encoder = accelerator.unwrap_model(text_encoder).eval()
    return losses, seconds


def train_style_lora(base_model_id: str, training_images, training_captions: list[str],
                     output_dir: str, num_epochs: int = 10, rank: int = 2,
                     batch_size: int = 16, progress: bool = True) -> Path:
    """The module's exercise 3, with its signature: LoRA on ``base_model_id``'s U-Net from
    ``training_images`` [n, 3, 32, 32] in [-1, 1] (or a list of [3, 32, 32]) and their
    captions, ``num_epochs`` passes over them; writes the adapter into ``output_dir`` and
    returns its file. Any registry name or pipeline folder works as the base."""
    images = training_images if isinstance(training_images, torch.Tensor) \
        else torch.stack(list(training_images))
    if len(images) != len(training_captions):
        raise ValueError(f"{len(images)} images but {len(training_captions)} captions")
    steps_per_epoch = max(1, len(images) // min(batch_size, len(images)))
    recipe = LoRARecipe(adapter="style", rank=rank, alpha=float(rank), text_encoder_rank=0,
                        steps=num_epochs * steps_per_epoch, batch_size=batch_size,
                        n_images=len(images), base=base_model_id)
    result = train_adapter(recipe, progress=progress, data=(images, list(training_captions)))
    return save_adapter(result.pipe, output_dir, result.record)


def add_arguments(parser) -> None:
    """The options of ``python -m course train lora``."""
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--adapter", choices=("purple", "outline"), required=True)
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--text-encoder-rank", type=int, help="0 keeps the text encoder frozen")
    parser.add_argument("--targets", choices=sorted(TARGET_SETS),
                        help="default: the adapter's bundled recipe")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--prior-weight", type=float, help="DreamBooth prior preservation")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output", type=Path, help="folder (default: "
                        f"{DEFAULT_HOME}/adapters/NAME)")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default="auto",
                        help="auto: bf16 on a GPU, float32 on a CPU")
    parser.add_argument("--loss-plot", type=Path, help="also save the loss curve here (PNG)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Train with the options of ``add_arguments``; write the adapter (or the fine-tuned
    pipeline) and its record."""
    from accelerate import PartialState

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = LoRARecipe.for_adapter(args.adapter, method=args.method)
    if args.targets:
        recipe.targets = TARGET_SETS[args.targets]
    recipe = with_overrides(recipe, {
        "rank": args.rank, "text_encoder_rank": args.text_encoder_rank, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "prior_weight": args.prior_weight,
        "seed": args.seed})
    if args.rank is not None:
        recipe.alpha = float(args.rank)
    gpu = torch.cuda.is_available() and args.device == "auto"
    precision = ("bf16" if gpu else "no") if args.mixed_precision == "auto" \
        else args.mixed_precision
    result = train_adapter(recipe, progress=not args.no_progress, mixed_precision=precision,
                           device=args.device)
    if not PartialState().is_main_process:
        return 0
    output = args.output or DEFAULT_HOME / "adapters" / args.adapter
    if recipe.method == "lora":
        path = save_adapter(result.pipe, output, result.record)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    else:
        from ..models.pipelines import save_tiny_pipeline

        save_tiny_pipeline(result.pipe, output, result.record)
        print(f"wrote the fine-tuned pipeline to {output}")
    if args.loss_plot:
        loss_figure(result.losses, f"{recipe.method} {recipe.adapter}").savefig(args.loss_plot)
    print(json.dumps({k: v for k, v in result.record.items()
                      if k not in ("recipe", "losses_every_10_steps")}))
    return 0
