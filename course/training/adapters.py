"""The two bundled adapters' data and files: the few images each learns from, DreamBooth's class
images, and the adapter written in diffusers' LoRA format.

- ``purple``: a new colour word, 32 images of purple shapes on 7 of the 15 shape x position
  combinations (``PURPLE_TRAIN``); the other 8 measure whether the word generalises;
- ``outline``: a style with no trigger word, 32 ordinary captions drawn as 2-pixel outlines.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.shapes import POSITIONS, SHAPES, Combo, all_combinations, caption, render_combinations
from ..lora import ADAPTER_FILE

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


def prior_dataset(pipe, n: int, seed: int = 1000, steps: int = 20):
    """DreamBooth's class images: what the base model draws for ``n`` base-world captions, as
    (images [n, 3, 32, 32] in [-1, 1], captions). Drawn before any fine-tuning."""
    from ..tinysd.evaluate import evaluation_prompts, generate

    prompts = evaluation_prompts("seen", n, seed=seed)
    return generate(pipe, prompts, 1.0, steps, seed=seed), prompts


def trainable_count(pipe) -> dict:
    """LoRA weights in the U-Net and the text encoder, and the U-Net's own size."""
    def lora(network):
        return sum(p.numel() for n, p in network.named_parameters() if "lora_" in n)

    unet_total = sum(p.numel() for n, p in pipe.unet.named_parameters() if "lora_" not in n)
    return {"unet_lora": lora(pipe.unet), "text_encoder_lora": lora(pipe.text_encoder),
            "unet_total": unet_total, "unet_share": lora(pipe.unet) / unet_total}


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
