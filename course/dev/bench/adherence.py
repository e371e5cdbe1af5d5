"""Prompt adherence of every bundled text-to-image pipeline, by sampler and step count, and by
guidance scale.

Each pipeline of ``course.models.registry.ENTRIES`` that ships with the package is sampled on
the same "seen" prompts from the same start noise (``course.tinysd.evaluate.generate``) and its
images judged by ``course.metrics.prompt_adherence``:

- steps: DDIM and DPM-Solver++ 2M (``course.tinysd.model.make_scheduler``) for the
  v-prediction pipelines, the pipeline's own flow-matching Euler for the flow ones, at each step
  count, at guidance ``GUIDANCE``;
- guidance: each scale at ``GUIDANCE_STEPS`` steps with the pipeline's first sampler, and the
  empty prompt (the unconditional model: the floor the text lifts adherence from).
"""

from __future__ import annotations

import time

from ...models.registry import ENTRIES

#: the bundled pipelines, in the registry's order
PIPELINES = tuple(name for name, entry in ENTRIES.items()
                  if entry.kind == "pipeline" and entry.source.startswith("package:"))
STEPS = (1, 2, 4, 10, 25, 50)
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0, 7.5, 12.0)
GUIDANCE = 3.0  # of the steps rows: lesson 08's, where every pipeline draws well
GUIDANCE_STEPS = 25
PROMPTS = 64
#: ``--quick``: enough to exercise every row, not to trust a number
QUICK = {"n_prompts": 4, "steps": (2, 4), "scales": (1.0, 3.0), "guidance_steps": 4}
#: what each sampler is called in the tables -> ``make_scheduler`` kind (None: the pipeline's own)
DDPM_SAMPLERS = {"DDIM": "ddim", "DPM++ 2M": "dpm++"}
FLOW_SAMPLERS = {"Euler (flow)": None}
ATTRIBUTES = ("color", "shape", "position", "all")


def samplers_of(pipe) -> dict:
    """The samplers a pipeline is judged with: the DDPM schedule's, or its own flow Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ...models.pipelines import flow_ready

    flow = isinstance(flow_ready(pipe.scheduler), FlowMatchEulerDiscreteScheduler)
    return FLOW_SAMPLERS if flow else DDPM_SAMPLERS


def _kept(result: dict) -> dict:
    return {key: result[key] for key in (*ATTRIBUTES, "n")}


def measure_pipeline(pipe, n_prompts: int = PROMPTS, steps=STEPS, scales=GUIDANCE_SCALES,
                     guidance: float = GUIDANCE, guidance_steps: int = GUIDANCE_STEPS,
                     seed: int = 0) -> dict:
    """One pipeline's rows.

    Returns {"samplers": [labels], "steps": [{"sampler", "steps", "color", "shape", "position",
    "all", "n"}], "guidance": [{"guidance", ...}], "empty": {...}, "seconds"}.
    """
    from ...tinysd.evaluate import evaluate_adherence

    start = time.perf_counter()
    samplers = samplers_of(pipe)
    by_steps = []
    for label, kind in samplers.items():
        for n in steps:
            result = evaluate_adherence(pipe, n_prompts, (guidance,), n, splits=("seen",),
                                        seed=seed, scheduler=kind, empty_prompt=False)
            by_steps.append({"sampler": label, "steps": n,
                             **_kept(result["seen"][float(guidance)])})
    first = next(iter(samplers.values()))
    result = evaluate_adherence(pipe, n_prompts, tuple(scales), guidance_steps, splits=("seen",),
                                seed=seed, scheduler=first, empty_prompt=True)
    by_guidance = [{"guidance": w, **_kept(r)} for w, r in result["seen"].items()]
    return {"samplers": list(samplers), "guidance_sampler": next(iter(samplers)),
            "steps": by_steps, "guidance": by_guidance, "empty": _kept(result["empty"]),
            "seconds": round(time.perf_counter() - start, 1)}


def bench_adherence(names=PIPELINES, n_prompts: int = PROMPTS, steps=STEPS,
                    scales=GUIDANCE_SCALES, guidance: float = GUIDANCE,
                    guidance_steps: int = GUIDANCE_STEPS, device: str = "auto",
                    seed: int = 0) -> dict:
    """Every pipeline of ``names``: what was asked, and each one's ``measure_pipeline`` rows."""
    from ...device import pick_device
    from ...models import load_pipeline

    where = pick_device(device)
    pipelines = {}
    for name in names:
        pipe = load_pipeline(name, device=where)
        pipe.set_progress_bar_config(disable=True)
        pipelines[name] = measure_pipeline(pipe, n_prompts, steps, scales, guidance,
                                           guidance_steps, seed)
        pipelines[name]["dtype"] = str(pipe.unet.dtype).removeprefix("torch.")
    return {"prompts": n_prompts, "split": "seen", "seed": seed, "guidance": guidance,
            "guidance_steps": guidance_steps, "step_counts": list(steps),
            "scales": list(scales), "device": where.type, "pipelines": pipelines}
