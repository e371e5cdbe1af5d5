"""Checks for lesson 05, classifier-free guidance.

Oracles: diffusers' ``ClassifierFreeGuidance`` guider and the blend written in torch, exactly as
``StableDiffusionPipeline.__call__`` writes it, for ``cfg_combine``; ``StableDiffusionPipeline``
itself (``output_type="latent"``, the same text states and start latents) for the guided loop,
run on the bundled tiny pipeline's U-Net.

The known mistakes are the slips the lesson warns about, written out here with plain torch and
diffusers, so that a failed case can say which one the answer equals.
"""

from __future__ import annotations

import torch

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor
from .oracles import bundled_tiny_pipeline, diffusers_quiet

__all__ = ["EXERCISES", "cfg_combine", "cfg_sample", "hint"]


# --------------------------------------------------------------------------------------------
# Exercise 1: cfg_combine(eps_uncond, eps_cond, guidance_scale)
# --------------------------------------------------------------------------------------------


def _blend(eps_uncond, eps_cond, w):
    """The line of ``StableDiffusionPipeline.__call__``: uncond + w (text - uncond)."""
    return eps_uncond + w * (eps_cond - eps_uncond)


def _guider(eps_uncond, eps_cond, w: float):
    """diffusers' own guider, in its default (diffusers-native) formulation."""
    from diffusers.guiders import ClassifierFreeGuidance

    with diffusers_quiet():
        guider = ClassifierFreeGuidance(guidance_scale=float(w))
        return guider.forward(eps_cond, eps_uncond).pred


def _combine_case(name, seed, w, shape=(2, 4, 16, 16), dtype=torch.float32, per_image=False,
                  hidden=False):
    def make():
        gen = seeded(seed)
        eps_uncond = torch.randn(shape, generator=gen).to(dtype)
        eps_cond = (eps_uncond + 0.3 * torch.randn(shape, generator=gen)).to(dtype)
        scale = torch.tensor(w, dtype=dtype).view(-1, 1, 1, 1) if per_image else w
        return {"eps_uncond": eps_uncond, "eps_cond": eps_cond, "guidance_scale": scale}

    def verify(inputs, got):
        uncond, cond, scale = inputs["eps_uncond"], inputs["eps_cond"], inputs["guidance_scale"]
        if per_image:  # the guider takes one float; the pipeline's line broadcasts
            expected = _blend(uncond, cond, scale)
        else:
            expected = _guider(uncond, cond, scale)
            assert torch.allclose(expected, _blend(uncond, cond, scale))
        return compare_tensor("guided prediction", got, expected, atol=1e-5, rtol=1e-5)

    return Case(name, make, verify, hidden=hidden)


def _swapped(eps_uncond, eps_cond, guidance_scale):
    return eps_cond + guidance_scale * (eps_uncond - eps_cond)


def _one_plus_w_convention(eps_uncond, eps_cond, guidance_scale):
    return eps_cond + guidance_scale * (eps_cond - eps_uncond)


def _scaled_cond_only(eps_uncond, eps_cond, guidance_scale):
    return guidance_scale * eps_cond


def _difference_only(eps_uncond, eps_cond, guidance_scale):
    return guidance_scale * (eps_cond - eps_uncond)


cfg_combine = Exercise(
    name="cfg_combine",
    function="cfg_combine",
    points=2,
    oracles=("diffusers.guiders", "diffusers.ClassifierFreeGuidance"),
    cases=[
        _combine_case("w = 7.5, Stable Diffusion's default, [2, 4, 16, 16]", 0, 7.5),
        _combine_case("w = 3 on a batch of 4 v-predictions, [4, 4, 8, 8]", 1, 3.0,
                      shape=(4, 4, 8, 8)),
        _combine_case("w = 1 is the conditional prediction", 2, 1.0, hidden=True),
        _combine_case("w = 0 is the unconditional prediction", 3, 0.0, hidden=True),
        _combine_case("w = 20 in float64 stays float64", 4, 20.0, dtype=torch.float64,
                      hidden=True),
        _combine_case("one w per image, a tensor [3, 1, 1, 1]", 5, [1.0, 4.0, 12.0],
                      shape=(3, 4, 8, 8), per_image=True, hidden=True),
    ],
    mistakes=[
        Mistake("arguments swapped", _swapped,
                "the answer is eps_cond + w (eps_uncond - eps_cond): guidance pushed away from "
                "the prompt, towards the empty one. Mind the order: the first argument is the "
                "unconditional prediction."),
        Mistake("Ho and Salimans' (1 + w) convention", _one_plus_w_convention,
                "the answer is eps_cond + w (eps_cond - eps_uncond) = (1 + w) eps_cond - w "
                "eps_uncond, Ho and Salimans' formulation, where w = 0 means no guidance. "
                "diffusers' guidance_scale (like Imagen's w) starts from the unconditional "
                "prediction instead, so that w = 1 means no guidance."),
        Mistake("w * eps_cond only", _scaled_cond_only,
                "the answer is w * eps_cond: that only rescales the conditional prediction and "
                "never uses the unconditional one, so there is no direction to extrapolate along."),
        Mistake("the difference without its base", _difference_only,
                "the answer is w (eps_cond - eps_uncond): the direction the prompt adds, scaled, "
                "but not added to the prediction it starts from."),
    ],
    hints=[
        "Start at the unconditional prediction and walk w times the way the prompt points: the "
        "direction is the difference between the two predictions.",
        "The direction is eps_cond - eps_uncond. w = 1 must give eps_cond back, w = 0 must give "
        "eps_uncond. Plain arithmetic broadcasts, so w may also be a tensor [B, 1, 1, 1].",
        "return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: cfg_sample(unet, scheduler, cond, uncond, latents, guidance_scale, steps)
# --------------------------------------------------------------------------------------------


def _scheduler(kind: str):
    """A fresh scheduler on the tiny pipeline's schedule, built with diffusers."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = bundled_tiny_pipeline().scheduler.config
    if kind == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")


def _loop_case(name, prompts, negative, w, steps, seed, kind="ddim", hidden=False):
    def make():
        pipe = bundled_tiny_pipeline()
        with torch.no_grad():  # diffusers' own encoder: cond and uncond as the pipeline makes them
            cond, uncond = pipe.encode_prompt(list(prompts), "cpu", 1, True, list(negative))
        size = pipe.unet.config.sample_size
        latents = torch.randn(len(prompts), pipe.unet.config.in_channels, size, size,
                              generator=seeded(seed))
        return {"unet": pipe.unet, "scheduler": _scheduler(kind), "cond": cond,
                "uncond": uncond, "latents": latents, "guidance_scale": w, "steps": steps}

    def verify(inputs, got):
        from diffusers import StableDiffusionPipeline

        parts = bundled_tiny_pipeline().components | {"scheduler": _scheduler(kind)}
        with torch.no_grad(), diffusers_quiet():
            oracle = StableDiffusionPipeline(**parts, requires_safety_checker=False)
            oracle.set_progress_bar_config(disable=True)
            expected = oracle(prompt_embeds=inputs["cond"], negative_prompt_embeds=inputs["uncond"],
                              latents=inputs["latents"].clone(), guidance_scale=w,
                              num_inference_steps=steps, output_type="latent").images
        return compare_tensor("final latents", got, expected, atol=2e-4, rtol=1e-3)

    return Case(name, make, verify, hidden=hidden)


def _loop(unet, scheduler, cond, uncond, latents, guidance_scale, steps, combine=_blend,
          zeros=False, conditional_only=False):
    """The guided loop, right with the defaults; each option is one of the known slips."""
    if zeros:
        uncond = torch.zeros_like(cond)
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    states = torch.cat([uncond, cond])
    with torch.no_grad(), diffusers_quiet():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
            prediction = unet(model_input, t, encoder_hidden_states=states).sample
            pred_uncond, pred_cond = prediction.chunk(2)
            guided = pred_cond if conditional_only else combine(pred_uncond, pred_cond,
                                                                 guidance_scale)
            x = scheduler.step(guided, t, x).prev_sample
    return x


def _zeros_for_uncond(**inputs):
    return _loop(**inputs, zeros=True)


def _chunks_swapped(**inputs):
    return _loop(**inputs, combine=_swapped)


def _loop_one_plus_w(**inputs):
    return _loop(**inputs, combine=_one_plus_w_convention)


def _no_guidance(**inputs):
    return _loop(**inputs, conditional_only=True)


cfg_sample = Exercise(
    name="cfg_sample",
    function="cfg_sample",
    points=3,
    time_limit=120.0,  # a few dozen U-Net calls: seconds on a free CPU, more on a busy one
    oracles=("diffusers.StableDiffusionPipeline", "diffusers.pipelines"),
    cases=[
        _loop_case("DDIM, 10 steps, w = 7.5, two prompts",
                   ("a red circle on the left", "a blue square at the top"), ("", ""), 7.5, 10, 0),
        _loop_case("DDIM, 6 steps, w = 3, a negative prompt", ("a green triangle in the center",),
                   ("yellow",), 3.0, 6, 1),
        _loop_case("DPM-Solver++, 8 steps, w = 12, three prompts",
                   ("a yellow circle at the bottom", "a red square on the right",
                    "a blue triangle on the left"), ("", "", ""), 12.0, 8, 2, kind="dpm++",
                   hidden=True),
        _loop_case("DDIM, 5 steps, w = 1: the pipeline skips the unconditional pass",
                   ("a green square at the top",), ("",), 1.0, 5, 3, hidden=True),
        _loop_case("DDIM, 4 steps, w = 20, negative prompts per image",
                   ("a blue circle in the center", "a red triangle at the top"),
                   ("blue", "triangle"), 20.0, 4, 4, hidden=True),
    ],
    mistakes=[
        Mistake("zeros instead of the empty prompt's states", _zeros_for_uncond,
                "the unconditional pass used torch.zeros_like(cond); the model learned "
                "\"no text\" as the text encoder's states of the empty prompt (that is what "
                "conditioning dropout fed it), which are not zeros. Use `uncond`."),
        Mistake("the two halves swapped", _chunks_swapped,
                "the halves of the U-Net's output were read in the other order than the states "
                "were stacked: guidance pushed away from the prompt. Stack [uncond, cond] and "
                "split in that same order."),
        Mistake("Ho and Salimans' (1 + w) convention", _loop_one_plus_w,
                "the blend was eps_cond + w (eps_cond - eps_uncond); the pipeline's "
                "guidance_scale starts from the unconditional prediction."),
        Mistake("no guidance at all", _no_guidance,
                "the scheduler stepped with the conditional prediction alone (what w = 1 "
                "gives); blend the two halves with cfg_combine."),
    ],
    hints=[
        "The loop of lesson 03, with two changes: every U-Net call sees the latents twice (once "
        "with the empty prompt's states, once with the prompt's), and the scheduler steps with "
        "the blend of the two predictions.",
        "states = torch.cat([uncond, cond]) once; at every t: model_input = "
        "scheduler.scale_model_input(torch.cat([x, x]), t); pred = unet(model_input, t, "
        "encoder_hidden_states=states).sample; pred_uncond, pred_cond = pred.chunk(2). Start "
        "from latents * scheduler.init_noise_sigma after scheduler.set_timesteps(steps).",
        "scheduler.set_timesteps(steps); x = latents * scheduler.init_noise_sigma; "
        "states = torch.cat([uncond, cond]); for t in scheduler.timesteps: pred_uncond, "
        "pred_cond = unet(scheduler.scale_model_input(torch.cat([x, x]), t), t, "
        "encoder_hidden_states=states).sample.chunk(2); x = scheduler.step(cfg_combine("
        "pred_uncond, pred_cond, guidance_scale), t, x).prev_sample; return x",
    ],
)

EXERCISES = [cfg_combine, cfg_sample]
