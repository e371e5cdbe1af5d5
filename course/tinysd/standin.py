"""A stand-in for Stable Diffusion 1.5: its classes and block layout, random weights, saved in
the hub's folder layout.

The lessons' real-SD cells need a CUDA GPU and the Hugging Face hub. So that their code has run
even where neither is, ``save_standin`` writes a ``StableDiffusionPipeline`` folder built the way
SD 1.5's is:

- ``UNet2DConditionModel`` from SD 1.5's shipped config (``course/assets/sd15_unet``): four
  levels, cross-attention at the top three, two ResNet layers a level;
- ``CLIPTextModel`` shaped like CLIP ViT-L/14's text tower (12 layers, width 768, 77 tokens),
  reading the course's CLIP tokenizer;
- ``AutoencoderKL`` with four levels (f = 8), ``scaling_factor`` 0.18215;
- ``PNDMScheduler`` with SD's scaled-linear betas (0.00085 to 0.012) and PLMS steps.

``scale="full"`` keeps SD 1.5's widths (860 M U-Net weights), for timing and memory at 512x512
on a GPU. ``scale="small"`` divides every width so that a 20-step image takes seconds on a CPU:
what the test suite runs. Either way the weights are random, so the images are noise: the
stand-in proves code paths and costs, never quality. ``load_pipeline`` reads it like any
folder; with ``COURSE_SD_STANDIN`` set to it, ``real_pipeline`` returns it instead of the hub's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.registry import ASSETS

#: widths (U-Net blocks, cross-attention = text width, text MLP, text layers and heads, VAE
#: blocks) and the latent size: SD 1.5's, and a CPU-sized copy with the same structure
SCALES = {
    "full": {"unet": (320, 640, 1280, 1280), "layers_per_block": 2, "text": 768, "text_mlp": 3072,
             "text_layers": 12, "text_heads": 12, "vae": (128, 256, 512, 512), "latent": 64},
    "small": {"unet": (32, 64, 64, 64), "layers_per_block": 1, "text": 64, "text_mlp": 128,
              "text_layers": 2, "text_heads": 4, "vae": (32, 32, 64, 64), "latent": 16},
}


def build_standin(scale: str = "small", seed: int = 0):
    """The stand-in ``StableDiffusionPipeline`` (float32, CPU, random weights drawn from ``seed``).
    Its images are (8 * latent) pixels square: 512 at "full", 128 at "small"."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from .vocab import load_tokenizer

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    size = SCALES[scale]
    # the random weights come from ``seed``; the caller's random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        unet_config = json.loads((ASSETS / "sd15_unet" / "config.json").read_text())
        unet_config = {k: v for k, v in unet_config.items() if not k.startswith("_")}
        unet_config.update(block_out_channels=list(size["unet"]), cross_attention_dim=size["text"],
                           layers_per_block=size["layers_per_block"], sample_size=size["latent"])
        unet = UNet2DConditionModel(**unet_config)
        tokenizer = load_tokenizer(max_length=77)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=size["text"], intermediate_size=size["text_mlp"],
            num_hidden_layers=size["text_layers"], num_attention_heads=size["text_heads"],
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=size["text"],
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=size["vae"], sample_size=8 * size["latent"], scaling_factor=0.18215)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_standin(folder, scale: str = "small", seed: int = 0) -> Path:
    """Write the stand-in to ``folder`` as safetensors in the hub's layout; returns the folder."""
    folder = Path(folder)
    build_standin(scale, seed).save_pretrained(folder, safe_serialization=True)
    return folder


if __name__ == "__main__":  # python -m course.tinysd.standin FOLDER [small|full]
    import sys

    print(save_standin(sys.argv[1], *(sys.argv[2:3] or ["small"])))
