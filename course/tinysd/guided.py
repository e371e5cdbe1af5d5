"""Guided sampling with a text-to-image pipeline, written out: what ``pipe(prompt, ...)`` does.

Four moves, each a line or two below:

1. encode the prompts and the negative (by default empty) prompts with the pipeline's CLIP text
   encoder: ``cond`` and ``uncond``, [B, L, D] each;
2. start from Gaussian latents [B, 4, h, w] (one seeded generator per image, as the pipeline
   draws them), times the scheduler's ``init_noise_sigma``;
3. at each timestep, ONE U-Net call on the batch [uncond; cond] (``torch.cat``: twice the rows,
   one pass), split the prediction in two, blend it with ``cfg_combine`` and let the scheduler step;
4. decode the latents with the VAE.

``guided_sample`` returns the decoded images *before* clamping to [-1, 1], so that over-saturation
(values pushed beyond the range an image can show) can be measured; the pipeline clamps them.
"""

from __future__ import annotations

import torch

from ..diffusion.broadcast import per_image
from ..diffusion.guidance import cfg_combine


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], negative_prompt=None):
    """(uncond, cond) text states [B, L, D] for ``prompts``; uncond is the negative prompt's,
    "" when None (the unconditional model), a str for every prompt, or a list of B strings."""
    if negative_prompt is None:
        negative_prompt = ""
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * len(prompts)
    if len(negative_prompt) != len(prompts):
        raise ValueError(f"{len(negative_prompt)} negative prompts for {len(prompts)} prompts")
    tokens = pipe.tokenizer(list(negative_prompt) + list(prompts), padding="max_length",
                            truncation=True, max_length=pipe.tokenizer.model_max_length,
                            return_tensors="pt").input_ids.to(pipe.device)
    states = pipe.text_encoder(tokens)[0].to(pipe.unet.dtype)  # [2B, L, D]
    return states.chunk(2)


def start_latents(pipe, n: int, seed: int = 0) -> torch.Tensor:
    """Start noise [n, 4, h, w] on the CPU: image i from its own generator, seeded
    ``seed * 100003 + i`` (what ``course.tinysd.evaluate.generate`` hands the pipeline)."""
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 100003 + i))
                      for i in range(n)])


@torch.no_grad()
def guided_latents(unet, scheduler, cond, uncond, latents, guidance_scale, steps: int,
                   progress: bool = False) -> torch.Tensor:
    """Denoise ``latents`` [B, 4, h, w] with classifier-free guidance; the final latents.

    cond, uncond: text states [B, L, D]; guidance_scale: w, a float or one per image [B].
    """
    scheduler.set_timesteps(steps, device=latents.device)
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc="sampling", leave=False)
    return guided_steps(unet, scheduler, cond, uncond, latents * scheduler.init_noise_sigma,
                        guidance_scale, timesteps)


@torch.no_grad()
def guided_steps(unet, scheduler, cond, uncond, x, guidance_scale, timesteps) -> torch.Tensor:
    """The guided loop itself over ``timesteps`` (after ``set_timesteps``), from latents ``x``
    [B, 4, h, w] already at the first of them: one U-Net call on [uncond; cond] a step."""
    states = torch.cat([uncond, cond])  # [2B, L, D]; uncond first, as diffusers orders them
    w = per_image(guidance_scale, x)
    for t in timesteps:
        model_input = scheduler.scale_model_input(torch.cat([x, x]), t)  # [2B, 4, h, w]
        prediction = unet(model_input, t, encoder_hidden_states=states).sample
        pred_uncond, pred_cond = prediction.chunk(2)
        # eps_hat = eps_uncond + w (eps_cond - eps_uncond)  (here v-predictions: the same blend)
        x = scheduler.step(cfg_combine(pred_uncond, pred_cond, w), t, x).prev_sample
    return x


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] from latents, NOT clamped (the pipeline clamps to [-1, 1] later)."""
    return pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample


@torch.no_grad()
def guided_sample(pipe, prompts: list[str], guidance_scale=5.0, steps: int = 20, seed: int = 0,
                  latents: torch.Tensor | None = None, negative_prompt=None, scheduler=None,
                  progress: bool = False) -> torch.Tensor:
    """Images [B, 3, H, W] (float32, CPU, unclamped) for ``prompts``, as ``pipe(prompts, ...)``
    draws them from the same start noise.

    Args:
        guidance_scale: w, a float or a tensor [B] (one per image).
        latents: start noise [B, 4, h, w]; ``start_latents(pipe, B, seed)`` when None.
        negative_prompt: what guidance steers away from; "" (the unconditional model) when None.
        scheduler: any diffusers scheduler on the pipeline's schedule; ``pipe.scheduler`` when None.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if latents is None:
        latents = start_latents(pipe, len(prompts), seed)
    latents = latents.to(pipe.device, pipe.unet.dtype)
    uncond, cond = encode_prompts(pipe, prompts, negative_prompt)
    final = guided_latents(pipe.unet, scheduler or pipe.scheduler, cond, uncond, latents,
                           guidance_scale, steps, progress)
    return decode(pipe, final).float().cpu()
