"""Checks for lesson 06, Stable Diffusion end to end, and image to image.

Oracle for ``generate``: ``diffusers.StableDiffusionPipeline.__call__`` itself, on the bundled
tiny pipeline, with the same prompt, negative prompt, guidance scale, step count and a CPU
generator seeded with the same seed. A hand-written pipeline is right when it gives that very
image (to float rounding), whatever the scheduler: DDIM (the pipeline's own), DPM-Solver++ and
Euler (whose start noise is 4096 times larger, so that its two scalings matter).

Oracle for ``img2img``: ``diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)`` with the
same arguments and generator, on the same schedulers.

The known mistakes are the slips the lesson warns about, written out below as one loop with a
switch per slip.
"""

from __future__ import annotations

import copy
import functools

import torch

from .cases import Case, Mistake
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor
from .oracles import bundled_tiny_pipeline, diffusers_quiet

__all__ = ["EXERCISES", "generate", "hint", "img2img"]


def _pipeline(kind: str):
    """A private copy of the tiny pipeline sampling with ``kind`` ("ddim", "dpm++", "euler")."""
    from ..tinysd.model import make_scheduler

    pipe = copy.deepcopy(bundled_tiny_pipeline())
    pipe.scheduler = make_scheduler(kind, pipe.scheduler.config)
    return pipe


def _oracle(pipe, prompt, negative_prompt, guidance_scale, steps, seed):
    with torch.no_grad(), diffusers_quiet():
        return pipe(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                    num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                    output_type="pt").images


# --------------------------------------------------------------------------------------------
# The pipeline written out, with one switch per known slip (all off: the right answer)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _by_hand(pipe, prompt, negative_prompt="", guidance_scale=5.0, steps=10, seed=0, *,
             pad=True, zeros_uncond=False, ignore_negative=False, swap_cfg=False,
             scale_noise=True, scale_input=True, global_rng=False, divide_scale=True,
             to_unit_range=True):
    tok, device = pipe.tokenizer, pipe.unet.device

    def embed(text):
        padding = {"padding": "max_length", "max_length": tok.model_max_length} if pad else {}
        ids = tok(text, truncation=True, return_tensors="pt", **padding).input_ids
        return pipe.text_encoder(ids.to(device))[0]

    cond = embed(prompt)
    uncond = embed("" if ignore_negative else negative_prompt)
    if zeros_uncond:
        uncond = torch.zeros_like(uncond)
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size,
             pipe.unet.config.sample_size)
    noise = torch.randn(shape) if global_rng else \
        torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    latents = noise.to(device, pipe.unet.dtype)
    if scale_noise:
        latents = latents * pipe.scheduler.init_noise_sigma
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    with diffusers_quiet():
        for t in scheduler.timesteps:
            both = torch.cat([latents, latents])
            model_input = scheduler.scale_model_input(both, t) if scale_input else both
            eps_uncond, eps_cond = pipe.unet(
                model_input, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            if swap_cfg:
                eps_uncond, eps_cond = eps_cond, eps_uncond
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
    scale = pipe.vae.config.scaling_factor
    image = pipe.vae.decode(latents / scale if divide_scale else latents).sample
    return (image / 2 + 0.5).clamp(0, 1) if to_unit_range else image


def _slip(**switch):
    return functools.partial(_by_hand, **switch)


# --------------------------------------------------------------------------------------------
# Exercise: generate(pipe, prompt, negative_prompt, guidance_scale, steps, seed) -> image
# --------------------------------------------------------------------------------------------


def _case(name, kind, prompt, guidance_scale, steps, seed, negative_prompt="", hidden=False):
    def make():
        return {"pipe": _pipeline(kind), "prompt": prompt, "negative_prompt": negative_prompt,
                "guidance_scale": guidance_scale, "steps": steps, "seed": seed}

    def verify(inputs, got):
        expected = _oracle(_pipeline(kind), prompt, negative_prompt, guidance_scale, steps, seed)
        return compare_tensor("image", got, expected, atol=1e-4, rtol=1e-3)

    return Case(name, make, verify, hidden=hidden)


generate = Exercise(
    name="generate",
    function="generate",
    points=3,
    time_limit=60,
    oracles=("diffusers.StableDiffusionPipeline", "diffusers.pipelines"),
    cases=[
        _case('DDIM, 4 steps, w = 5, seed 0: "a red circle on the left"', "ddim",
              "a red circle on the left", 5.0, 4, 0),
        _case('DDIM, 6 steps, w = 7.5, seed 3, a held-out prompt', "ddim",
              "a red square on the right", 7.5, 6, 3),
        _case('negative prompt: "a blue square at the top", not "a yellow circle in the center"',
              "ddim", "a blue square at the top", 5.0, 4, 1,
              negative_prompt="a yellow circle in the center"),
        _case("Euler (init_noise_sigma 4096), 6 steps, w = 5", "euler",
              "a yellow triangle on the left", 5.0, 6, 5),
        _case("DPM-Solver++, 5 steps, w = 3", "dpm++", "a green square on the right", 3.0, 5, 11,
              hidden=True),
        _case("w = 1: the conditional model alone", "ddim", "a blue circle at the top", 1.0, 4, 7,
              hidden=True),
        _case("the empty prompt, w = 3", "ddim", "", 3.0, 4, 2, hidden=True),
    ],
    mistakes=[
        Mistake("latents not divided by scaling_factor", _slip(divide_scale=False),
                "the final latents went into vae.decode as they are; the U-Net works on latents "
                "multiplied by vae.config.scaling_factor, so they must be divided by it before "
                "decoding."),
        Mistake("unconditional embedding from zeros", _slip(zeros_uncond=True),
                "the unconditional branch used a tensor of zeros; the model was trained with the "
                "text encoder's embedding of the empty prompt \"\" (or the negative prompt), "
                "which is not zero."),
        Mistake("guidance the wrong way round", _slip(swap_cfg=True),
                "the guided noise moved away from the prompt: eps_cond + w (eps_uncond - "
                "eps_cond), or the two halves of the U-Net's output taken in the wrong order; "
                "the batch is [uncond, cond] and the combination eps_uncond + w (eps_cond - "
                "eps_uncond)."),
        Mistake("negative prompt ignored", _slip(ignore_negative=True),
                "the unconditional branch always embedded \"\"; a negative prompt takes its "
                "place, and the guidance then pushes away from it."),
        Mistake("prompt not padded", _slip(pad=False),
                "the tokens were not padded to tokenizer.model_max_length; the pipeline pads "
                "(padding=\"max_length\"), and the U-Net's cross-attention looks at every "
                "position, padding included, so the image changes."),
        Mistake("start latents not scaled by init_noise_sigma", _slip(scale_noise=False),
                "the loop started from unit-variance noise; scheduler.init_noise_sigma (an "
                "attribute) is the spread the first step expects: 1 for DDIM, 4096 for Euler on "
                "this zero-terminal-SNR schedule."),
        Mistake("scale_model_input skipped", _slip(scale_input=False),
                "the U-Net saw the latents as they are; Euler-type schedulers need "
                "scheduler.scale_model_input(latents, t) before the model (for DDIM it is a "
                "no-op, which is why the DDIM cases pass)."),
        Mistake("start noise from the global random generator", _slip(global_rng=True),
                "the start latents came from torch's global generator; draw them with "
                "torch.randn(..., generator=torch.Generator().manual_seed(seed)) so that the "
                "seed alone decides the image."),
        Mistake("image left in [-1, 1]", _slip(to_unit_range=False),
                "the decoder's output is in [-1, 1]; pipe(..., output_type=\"pt\") returns "
                "(image / 2 + 0.5).clamp(0, 1)."),
    ],
    hints=[
        "Four stages, in the pipeline's order: text -> embeddings (the prompt and the negative "
        "prompt), seeded noise -> start latents, the denoising loop with guidance, latents -> "
        "image. Everything you need hangs off `pipe`: tokenizer, text_encoder, unet, scheduler, "
        "vae.",
        "Embeddings: pipe.text_encoder(pipe.tokenizer(text, padding=\"max_length\", "
        "max_length=pipe.tokenizer.model_max_length, truncation=True, "
        "return_tensors=\"pt\").input_ids)[0]. Latents: shape [1, 4, 16, 16], torch.randn with "
        "a torch.Generator().manual_seed(seed), times scheduler.init_noise_sigma. Loop: "
        "set_timesteps(steps), then per t the U-Net on scale_model_input of [latents, latents] "
        "with encoder_hidden_states=[uncond, cond].",
        "eps_uncond, eps_cond = pipe.unet(scheduler.scale_model_input(torch.cat([latents] * 2), "
        "t), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2); "
        "latents = scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, "
        "latents).prev_sample; after the loop: image = pipe.vae.decode(latents / "
        "pipe.vae.config.scaling_factor).sample; return (image / 2 + 0.5).clamp(0, 1)",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise: img2img(pipe, image, prompt, strength, negative_prompt, guidance_scale, steps, seed)
# --------------------------------------------------------------------------------------------


def _img2img_oracle(pipe, image, prompt, strength, negative_prompt, guidance_scale, steps, seed):
    from diffusers import StableDiffusionImg2ImgPipeline

    with torch.no_grad(), diffusers_quiet():
        reference = StableDiffusionImg2ImgPipeline(**pipe.components)
        reference.set_progress_bar_config(disable=True)
        return reference(prompt, image=image, strength=strength, negative_prompt=negative_prompt,
                         guidance_scale=guidance_scale, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(seed), output_type="pt").images


@torch.no_grad()
def _img2img_by_hand(pipe, image, prompt, strength=0.6, negative_prompt="", guidance_scale=5.0,
                     steps=25, seed=0, *, sample=True, noise_first=False, every_step=False,
                     scale_latent=True, to_signed=True):
    """SDEdit with one switch per known slip (all at their defaults: the right answer). Every
    slip happens before the loop, which is the course's own (``redraw_latents``)."""
    from ..tinysd.img2img import redraw_latents

    generator = torch.Generator().manual_seed(seed)
    x = image.to(pipe.vae.device) * 2 - 1 if to_signed else image.to(pipe.vae.device)
    distribution = pipe.vae.encode(x).latent_dist
    shape = distribution.mean.shape
    noise = torch.randn(shape, generator=generator) if noise_first else None
    z0 = distribution.sample(generator) if sample else distribution.mean
    if scale_latent:
        z0 = z0 * pipe.vae.config.scaling_factor
    if noise is None:
        noise = torch.randn(shape, generator=generator)
    with diffusers_quiet():  # every step run = noised all the way back, as strength 1 does
        return redraw_latents(pipe, z0, noise.to(z0.device), prompt,
                              1.0 if every_step else strength, negative_prompt, guidance_scale,
                              steps)


def _img2img_slip(**switch):
    return functools.partial(_img2img_by_hand, **switch)


def _input_image(combo: tuple[str, str, str], seed: int) -> torch.Tensor:
    """A rendered shape [1, 3, 32, 32] in [0, 1]: the picture to redraw."""
    from ..data.shapes import Combo, render_combinations

    return render_combinations([Combo(*combo)], seed=seed) / 2 + 0.5


def _img2img_case(name, kind, combo, prompt, strength, guidance_scale, steps, seed,
                  negative_prompt="", hidden=False):
    def make():
        return {"pipe": _pipeline(kind), "image": _input_image(combo, seed), "prompt": prompt,
                "strength": strength, "negative_prompt": negative_prompt,
                "guidance_scale": guidance_scale, "steps": steps, "seed": seed}

    def verify(inputs, got):
        expected = _img2img_oracle(_pipeline(kind), _input_image(combo, seed), prompt, strength,
                                   negative_prompt, guidance_scale, steps, seed)
        return compare_tensor("image", got, expected, atol=1e-4, rtol=1e-3)

    return Case(name, make, verify, hidden=hidden)


img2img = Exercise(
    name="img2img",
    function="img2img",
    points=2,
    time_limit=60,
    oracles=("diffusers.StableDiffusionImg2ImgPipeline", "diffusers.pipelines",
             "course.tinysd.img2img"),
    cases=[
        _img2img_case("DDIM, strength 0.5 of 10 steps, w = 5: a red circle becomes blue",
                      "ddim", ("red", "circle", "left"), "a blue circle on the left", 0.5, 5.0,
                      10, 0),
        _img2img_case("DDIM, strength 0.8 of 6 steps, w = 7.5: a square becomes a triangle",
                      "ddim", ("green", "square", "center"), "a green triangle in the center",
                      0.8, 7.5, 6, 1),
        _img2img_case("Euler, strength 0.6 of 10 steps (a multistep scheduler's begin index)",
                      "euler", ("yellow", "triangle", "top"), "a red triangle at the top", 0.6,
                      5.0, 10, 2, hidden=True),
        _img2img_case("strength 1: every step, the input only through the generator", "ddim",
                      ("blue", "square", "right"), "a yellow circle on the left", 1.0, 3.0, 5, 3,
                      hidden=True),
        _img2img_case("DPM-Solver++, strength 0.3, a negative prompt", "dpm++",
                      ("red", "square", "bottom"), "a red square at the bottom", 0.3, 5.0, 10, 4,
                      negative_prompt="a blue square at the bottom", hidden=True),
    ],
    mistakes=[
        Mistake("the posterior's mean instead of a sample", _img2img_slip(sample=False),
                "the image was encoded to latent_dist.mean; diffusers draws latent_dist.sample("
                "generator), from the same generator as the noise and before it. (On the tiny "
                "pipeline the mean changes the redrawn images little, as the lesson notes; the "
                "check asks for what diffusers does.)"),
        Mistake("the noise drawn before the image's latent", _img2img_slip(noise_first=True),
                "the same generator gives the image's sample and the noise; diffusers draws the "
                "sample first, then the noise. Swap the two draws."),
        Mistake("every step run, whatever the strength", _img2img_slip(every_step=True),
                "all the scheduler's timesteps ran: strength picks how far back to start. Keep "
                "the last int(steps * strength) of scheduler.timesteps and noise to the first "
                "of them."),
        Mistake("the image latent not multiplied by scaling_factor",
                _img2img_slip(scale_latent=False),
                "the encoder's latent went in as it is; the U-Net was trained on latents times "
                "pipe.vae.config.scaling_factor."),
        Mistake("the image left in [0, 1]", _img2img_slip(to_signed=False),
                "the VAE's encoder expects images in [-1, 1]: encode image * 2 - 1."),
    ],
    hints=[
        "The text-to-image loop of `generate`, with a different start: encode the image, noise it "
        "to the timestep that `strength` picks, and run only the steps from there on.",
        "One generator = torch.Generator().manual_seed(seed), used twice and in this order: "
        "z0 = pipe.vae.encode(image * 2 - 1).latent_dist.sample(generator) * scaling_factor, "
        "then noise = torch.randn(z0.shape, generator=generator). After "
        "scheduler.set_timesteps(steps): run = int(steps * strength), start = steps - run, "
        "timesteps = scheduler.timesteps[start:] (and scheduler.set_begin_index(start) when the "
        "scheduler has it).",
        "latents = scheduler.add_noise(z0, noise, timesteps[:1]); then for t in timesteps the "
        "guided step of `generate`; decode latents / scaling_factor and return "
        "(image / 2 + 0.5).clamp(0, 1).",
    ],
)

EXERCISES = [generate, img2img]
