"""Image to image (SDEdit, Meng et al. 2022), written out: what ``StableDiffusionImg2ImgPipeline``
does with a text-to-image pipeline's own parts.

Forward noising returns: instead of starting from pure noise, start from the *input image*
noised part of the way, then denoise the rest of the way under the new prompt.

1. encode the prompt and the negative prompt, as for text to image;
2. encode the image: z0 ~ q(z | x) times the VAE's ``scaling_factor`` (a sample, as diffusers
   draws it, from the same generator as the noise, and before it);
3. ``strength`` in (0, 1] picks how far to go back: of ``steps`` sampler steps, the last
   ``int(steps * strength)`` are run, starting from the timestep t_start where they begin, and
   z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps (``scheduler.add_noise``): lesson 01's
   forward process in one jump;
4. the guided denoising loop over those steps only, then decode.

strength 1 starts at the first timestep, where the tiny pipeline's zero-terminal-SNR schedule
keeps nothing of the input; small strengths keep its layout and colours and change details.
"""

from __future__ import annotations

import torch

from .guided import decode, encode_prompts, guided_steps


def kept_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The timesteps img2img runs: the last ``int(steps * strength)`` of ``steps`` (call after
    ``scheduler.set_timesteps(steps)``), as diffusers' ``get_timesteps`` picks them."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    run = min(int(steps * strength), steps)
    if run == 0:
        raise ValueError(f"strength {strength} of {steps} steps runs no step: raise either")
    start = (steps - run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):  # multistep schedulers count their own steps
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


@torch.no_grad()
def redraw_latents(pipe, z0: torch.Tensor, noise: torch.Tensor, prompt: str, strength: float,
                   negative_prompt: str = "", guidance_scale: float = 5.0,
                   steps: int = 25) -> torch.Tensor:
    """Steps 3-4 from an encoded image ``z0`` [1, 4, h, w] (scaled) and ``noise`` of its shape:
    noise z0 to the first kept timestep, run the guided loop from there, decode. An image
    [1, 3, H, W] in [0, 1]."""
    scheduler = pipe.scheduler
    uncond, cond = encode_prompts(pipe, [prompt], negative_prompt)
    scheduler.set_timesteps(steps, device=pipe.unet.device)
    timesteps = kept_timesteps(scheduler, steps, strength)
    latents = scheduler.add_noise(z0, noise, timesteps[:1]).to(pipe.unet.dtype)  # z_t at t_start
    latents = guided_steps(pipe.unet, scheduler, cond, uncond, latents, guidance_scale, timesteps)
    return (decode(pipe, latents) / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def img2img(pipe, image: torch.Tensor, prompt: str, strength: float = 0.6,
            negative_prompt: str = "", guidance_scale: float = 5.0, steps: int = 25,
            seed: int = 0, posterior: str = "sample") -> torch.Tensor:
    """``image`` [1, 3, H, W] in [0, 1] redrawn for ``prompt``: [1, 3, H, W] in [0, 1], the
    image ``StableDiffusionImg2ImgPipeline(**pipe.components)`` makes with
    ``generator=torch.Generator().manual_seed(seed)``.

    posterior: "sample" (diffusers' default) or "mean" (its ``sample_mode="argmax"``): z0 is
    the posterior's mean, and the generator gives the noise only."""
    if posterior not in ("sample", "mean"):
        raise ValueError(f'posterior must be "sample" or "mean", got {posterior!r}')
    generator = torch.Generator().manual_seed(seed)
    x = image.to(pipe.vae.device, pipe.vae.dtype) * 2 - 1  # [1, 3, H, W] in [-1, 1]
    distribution = pipe.vae.encode(x).latent_dist
    z0 = distribution.sample(generator) if posterior == "sample" else distribution.mode()
    z0 = z0 * pipe.vae.config.scaling_factor  # [1, 4, h, w]
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
    return redraw_latents(pipe, z0, noise, prompt, strength, negative_prompt, guidance_scale,
                          steps)
