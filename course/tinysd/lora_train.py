"""Fine-tuning tiny Stable Diffusion on a few images: LoRA with peft, or every weight.

Two adapters teach the bundled pipeline something its 60 captions never showed:

- ``purple``: a new colour word. The tokenizer splits "purple" into five pieces (p, u, r, p,
  le) whose embeddings no caption ever trained, much as DreamBooth binds a rare token to a new
  subject. 32 images of purple shapes, on 7 of the 15 shape x position combinations;
- ``outline``: a style with no trigger word. 32 images of ordinary captions, drawn as 2-pixel
  outlines; while the adapter is active, every prompt draws outlines.

The loss is the base model's own (``train.py``): v-prediction on latents z0 = the mean of
q(z | x) times the scaling factor, zero-terminal-SNR schedule,

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

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.shapes import POSITIONS, SHAPES, Combo, all_combinations, caption, render_combinations
from ..lora import ADAPTER_FILE, ATTENTION_TARGETS
from ..models.registry import USER_DIR as DEFAULT_HOME

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
#: the shape x position combinations the purple adapter trains on: 7 of 15, every shape and
#: every position at least once; the other 8 are never shown in purple
PURPLE_TRAIN = (("circle", "left"), ("circle", "top"), ("circle", "center"),
                ("square", "right"), ("square", "bottom"),
                ("triangle", "center"), ("triangle", "left"))


def purple_combinations(split: str) -> list[Combo]:
    """The purple combinations the adapter trains on ("train", 7) or never sees ("unseen", 8)."""
    if split not in ("train", "unseen"):
        raise ValueError(f'split must be "train" or "unseen", got {split!r}')
    return [Combo("purple", s, p) for s in SHAPES for p in POSITIONS
            if ((s, p) in PURPLE_TRAIN) == (split == "train")]


def adapter_dataset(adapter: str, n: int = 32, seed: int = 0):
    """The few images an adapter learns from: (images [n, 3, 32, 32] in [-1, 1], captions).

    purple: the 7 training combinations in turn, jittered; outline: ``n`` distinct ordinary
    combinations of the 60 (seeded), drawn as outlines with their usual captions.
    """
    if adapter == "purple":
        combos = purple_combinations("train")
        chosen = [combos[i % len(combos)] for i in range(n)]
        return render_combinations(chosen, seed=seed), [caption(c) for c in chosen]
    if adapter == "outline":
        combos = all_combinations()
        order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(seed))
        chosen = [combos[i] for i in order[:n].tolist()]
        return render_combinations(chosen, seed=seed, style="outline"), [caption(c)
                                                                            for c in chosen]
    raise ValueError(f'adapter must be "purple" or "outline", got {adapter!r}')


@dataclass
class LoRARecipe:
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

    def to_dict(self) -> dict:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data


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


def prior_dataset(pipe, n: int, seed: int = 1000, steps: int = 20):
    """DreamBooth's class images: what the base model draws for ``n`` base-world captions, as
    (images [n, 3, 32, 32] in [-1, 1], captions). Drawn before any fine-tuning."""
    from .evaluate import evaluation_prompts, generate

    prompts = evaluation_prompts("seen", n, seed=seed)
    return generate(pipe, prompts, 1.0, steps, seed=seed), prompts


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


def train_adapter(recipe: LoRARecipe, pipe=None, progress: bool = True, on_step=None,
                  mixed_precision: str = "no", device: str = "auto",
                  data: tuple[torch.Tensor, list[str]] | None = None) -> AdapterResult:
    """Fine-tune ``pipe`` (default: a fresh copy of ``recipe.base`` on the CPU) in place.

    data: (images [n, 3, 32, 32] in [-1, 1], captions) to learn from instead of
    ``adapter_dataset(recipe.adapter)``.
    on_step(step, loss): after every step (loss is a float only every 10 steps, else None).
    mixed_precision: "no" or "bf16" (GPU): frozen weights in bf16, trainable ones in float32.
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    from ..models import load_pipeline
    from .model import make_noise_scheduler
    from .train import PromptCache, drop_captions

    if recipe.method not in ("lora", "full"):
        raise ValueError(f'method must be "lora" or "full", got {recipe.method!r}')
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    torch.manual_seed(recipe.seed)
    if pipe is None:
        pipe = load_pipeline(recipe.base, device="cpu", dtype=torch.float32)
    pipe.to(accelerator.device)
    images, captions = data or adapter_dataset(recipe.adapter, recipe.n_images, recipe.seed)
    if recipe.prior_weight > 0:
        prior_images, prior_captions = prior_dataset(pipe, recipe.prior_images)
        prior_latents = _encode(pipe, prior_images, accelerator.device)
    latents = _encode(pipe, images, accelerator.device)
    pipe.vae.requires_grad_(False)

    if recipe.method == "lora":
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        params = attach_lora(pipe, recipe)
        lr = recipe.lr
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

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def learning_rate(step):  # a multiple of lr; step counts from 0
        warm = min(1.0, (step + 1) / 20)
        if recipe.lr_schedule == "constant":
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / recipe.steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    rows = torch.arange(len(captions))
    loader = DataLoader(TensorDataset(rows), batch_size=min(recipe.batch_size, len(rows)),
                        shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(recipe.seed))
    # the schedule is not prepared: accelerate would step it once per process, every step
    unet, text_encoder, optimizer, loader = accelerator.prepare(
        pipe.unet, pipe.text_encoder, optimizer, loader)
    prompts = PromptCache(pipe.tokenizer)
    noise_scheduler = make_noise_scheduler()
    T = noise_scheduler.config.num_train_timesteps
    generator = torch.Generator(accelerator.device).manual_seed(
        recipe.seed + 1 + accelerator.process_index)
    drop_generator = torch.Generator().manual_seed(recipe.seed + 2 + accelerator.process_index)

    instance_dropout = recipe.instance_dropout
    if instance_dropout is None:
        instance_dropout = 0.1 if recipe.adapter == "outline" else 0.0

    def v_loss(z0, batch_captions):
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        t = torch.randint(0, T, (len(z0),), generator=generator, device=z0.device)
        z_t = noise_scheduler.add_noise(z0, noise, t)
        v = noise_scheduler.get_velocity(z0, noise, t)  # sqrt(a) eps - sqrt(1 - a) z0
        states = text_encoder(prompts(batch_captions, z0.device))[0]  # [B, L, width]
        prediction = unet(z_t, t, encoder_hidden_states=states).sample
        return F.mse_loss(prediction.float(), v.float())

    unet.train()
    text_encoder.train()
    losses, window = [], []
    bar = tqdm(total=recipe.steps, desc=f"{recipe.method} {recipe.adapter}",
               disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    step = 0
    while step < recipe.steps:
        for (batch,) in loader:
            batch = batch.to(accelerator.device)
            with accelerator.autocast():
                loss = v_loss(latents[batch], drop_captions(
                    [captions[i] for i in batch.tolist()], instance_dropout, drop_generator))
                if recipe.prior_weight > 0:  # as many class images as instance images
                    pick = torch.randint(0, len(prior_captions), (len(batch),),
                                         generator=generator, device=accelerator.device)
                    kept = drop_captions([prior_captions[i] for i in pick.tolist()],
                                         recipe.cond_dropout, drop_generator)
                    loss = loss + recipe.prior_weight * v_loss(prior_latents[pick], kept)
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
    for network in (pipe.unet, pipe.text_encoder):
        network.requires_grad_(False)
        if mixed_precision == "bf16":
            network.to(dtype=torch.float32)
    record = training_record(recipe, pipe, losses, seconds, accelerator)
    return AdapterResult(pipe, losses, seconds, record)


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


def trainable_count(pipe) -> dict:
    """LoRA weights in the U-Net and the text encoder, and the U-Net's own size."""
    def lora(network):
        return sum(p.numel() for n, p in network.named_parameters() if "lora_" in n)

    unet_total = sum(p.numel() for n, p in pipe.unet.named_parameters() if "lora_" not in n)
    return {"unet_lora": lora(pipe.unet), "text_encoder_lora": lora(pipe.text_encoder),
            "unet_total": unet_total, "unet_share": lora(pipe.unet) / unet_total}


def training_record(recipe, pipe, losses, seconds, accelerator) -> dict:
    import diffusers
    import peft

    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"recipe": recipe.to_dict(), "train_seconds": round(seconds, 1),
            "final_loss": losses[-1] if losses else None, "losses_every_10_steps": losses,
            "parameters": trainable_count(pipe) if recipe.method == "lora" else None,
            "device": f"{device.type} ({name or platform.machine()})",
            "mixed_precision": accelerator.mixed_precision, "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "peft": peft.__version__}}


def lora_state_dicts(pipe, adapter_name: str = "default") -> dict:
    """The adapter's weights per network, for ``save_lora_weights``, in peft's own naming
    (``<module>.lora_A.weight``, ``<module>.lora_B.weight``), which diffusers loads as it is.

    Not ``convert_state_dict_to_diffusers``: it renames the linear layers' weights to the older
    ``lora.down`` / ``lora.up`` but not the convolutions', and diffusers 0.42 loads such a mixed
    file without the renamed ones, with nothing but a warning.
    """
    from peft.utils import get_peft_model_state_dict

    layers = {"unet_lora_layers": get_peft_model_state_dict(pipe.unet,
                                                           adapter_name=adapter_name)}
    if getattr(pipe.text_encoder, "peft_config", None):
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(
            pipe.text_encoder, adapter_name=adapter_name)
    return layers


def save_adapter(pipe, folder, record: dict | None = None) -> Path:
    """Write the trained adapter as ``folder/pytorch_lora_weights.safetensors`` (diffusers'
    LoRA format, float16: half the size) and ``record`` as ``folder/training.json``."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = {key: {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in d.items()}
              for key, d in lora_state_dicts(pipe).items()}
    StableDiffusionPipeline.save_lora_weights(str(folder), weight_name=ADAPTER_FILE,
                                              safe_serialization=True, **layers)
    if record is not None:
        (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return folder / ADAPTER_FILE


def loss_figure(losses: list[float], title: str = ""):
    """The training loss, one point per 10 steps."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 2.6))
    axis.plot([10 * (i + 1) for i in range(len(losses))], losses)
    axis.set(xlabel="step", ylabel="v-prediction loss", title=title, yscale="log")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course train lora",
                                     description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = LoRARecipe.for_adapter(args.adapter, method=args.method)
    if args.targets:
        recipe.targets = TARGET_SETS[args.targets]
    overrides = {"rank": args.rank, "text_encoder_rank": args.text_encoder_rank,
                 "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "prior_weight": args.prior_weight, "seed": args.seed}
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    if args.rank is not None:
        recipe.alpha = float(args.rank)
    gpu = torch.cuda.is_available() and args.device == "auto"
    precision = ("bf16" if gpu else "no") if args.mixed_precision == "auto" \
        else args.mixed_precision
    result = train_adapter(recipe, progress=not args.no_progress, mixed_precision=precision,
                           device=args.device)
    from accelerate import PartialState

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


if __name__ == "__main__":
    raise SystemExit(main())
