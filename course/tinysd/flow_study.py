"""Lesson 08's measured comparison: flow matching against the DDPM-schedule model, on the same
world, at the same training budget.

``tiny-shapes`` (v-prediction on the zero-terminal-SNR DDPM schedule) and ``tiny-shapes-flow``
(flow matching, uniform sigma) share their autoencoder, architecture, data, steps (1000), batch
(128) and learning-rate schedule; only the objective differs (``course.training.objectives``).
All rows draw the same prompts from the same start latents, and every image is judged by
``course.metrics.prompt_adherence`` (colour, shape, position, all three).

- adherence at 1, 2, 4, 8, 16 and 50 steps: the flow with Euler and with Heun (diffusers'
  ``FlowMatchHeunDiscreteScheduler``), ``tiny-shapes`` with DDIM and with DPM-Solver++ 2M, and
  the logit-normal twin with Euler; U-Net calls counted, not assumed;
- straightness of 50-step trajectories, |z_end - z_start| / path length, in the coordinates of
  the straight path: a DDIM state x_t = a z0 + b eps is z = x_t / (a + b) = (1 - sigma) z0 +
  sigma eps with sigma = b / (a + b), so the two models' paths are measured alike (a path's
  length does not depend on how it is parametrised);
- SD3's sampling shift on the flow, 1 (none) to 6;
- one round of reflow (``python -m course train reflow``, one folder per student): the teacher
  and each student at 1, 2, 4, 8 and 50 steps, and 2 evenly spaced steps (diffusers' 2-step flow
  schedule is 1 -> 0.001 -> 0: one real step), at guidance 1 and 3, with straightness and the
  pixel distance of each few-step image to the 50-step one.

``python -m course.tinysd.flow_study [--reflow DIR ...] [--prompts N]`` writes
``course/assets/flow_study.json`` by default, which lesson 08 shows. The hypotheses below were
written before the first measurement and are stored with the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from ..metrics import prompt_adherence
from ..models.registry import ASSETS
from .evaluate import evaluation_prompts

OUTPUT = ASSETS / "flow_study.json"
STEP_COUNTS = (1, 2, 4, 8, 16, 50)
SHIFTS = (1.0, 2.0, 3.0, 6.0)
SHIFT_STEPS = (2, 4, 8, 16)
REFLOW_STEPS = (1, 2, "2 even", 4, 8, 50)
STRAIGHTNESS_STEPS = 50
GUIDANCE = 3.0  # lesson 08's, and what both pipelines were judged at when they were chosen

#: Written before any of these rows was measured, kept whichever way the numbers fall.
HYPOTHESES = {
    "solvers": "Flow with Euler is poor at 1-2 steps (a single jump gives the average image: "
               "colour wrong) and right from 4-8 steps. Heun, a second-order method, is better "
               "per step but not per U-Net call. DDIM on tiny-shapes is at least as good as flow "
               "Euler at every step count (lesson 08's own run: 100% from 2 steps), and "
               "DPM-Solver++ matches DDIM from 4 steps.",
    "straightness": "The flow's 50-step paths are no straighter than DDIM's on tiny-shapes "
                    "(the 2-D toy found them alike); both well below 1.",
    "time sampling": "Uniform sigma beats logit-normal on position at every step count "
                     "(measured before: logit-normal places shapes at chance).",
    "shift": "No shift (1) is best or tied: 16x16x4 latents are far below SD3's resolution, "
             "and a shift crowds the steps at high noise, leaving few for colour.",
    "reflow": "As Liu et al. 2022 report: one round of reflow straightens the paths "
              "(straightness closer to 1) and raises 1- and 2-step adherence, most in colour, "
              "and costs a little (a few points at most) at 50 steps.",
}


def flow_heun(pipe):
    """diffusers' Heun sampler for a flow pipeline, on its scheduler's config."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    from ..models.pipelines import flow_ready

    config = {k: pipe.scheduler.config[k] for k in ("num_train_timesteps", "shift")}
    return flow_ready(FlowMatchHeunDiscreteScheduler(**config))


def shifted_euler(pipe, shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..models.pipelines import flow_ready

    return flow_ready(FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config,
                                                                  shift=shift))


class CallCounter:
    """Counts the U-Net's forward calls (one per guided batch, whatever the scheduler)."""

    def __init__(self, unet):
        self.calls = 0
        self.handle = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1


@torch.no_grad()
def sample(pipe, prompts: list[str], latents: torch.Tensor, steps, guidance: float,
           keep_path: bool = False) -> dict:
    """Images [N, 3, H, W] in [-1, 1] from ``latents`` [N, 4, h, w]; with ``keep_path`` also
    every latent state [steps + 1, N, 4, h, w]. ``steps``: a count, or "2 even" (sigmas 1, 0.5,
    then 0). Returns {"images", "calls" (U-Net calls), "seconds", "path"}."""
    states = [latents.clone()]

    def keep(pipeline, step, timestep, tensors):
        states.append(tensors["latents"].detach().float().cpu())
        return tensors

    kwargs = {"sigmas": [1.0, 0.5]} if steps == "2 even" else {"num_inference_steps": steps}
    counter = CallCounter(pipe.unet)
    start = time.perf_counter()
    try:
        images = pipe(prompts, latents=latents.to(pipe.device), guidance_scale=guidance,
                      output_type="pt", callback_on_step_end=keep if keep_path else None,
                      **kwargs).images
    finally:
        counter.handle.remove()
    return {"images": images.float().cpu() * 2 - 1, "calls": counter.calls,
            "seconds": time.perf_counter() - start,
            "path": torch.stack(states) if keep_path else None}


def flow_coordinates(path: torch.Tensor, scheduler) -> torch.Tensor:
    """States of a sampling run [K + 1, N, ...] in the straight path's coordinates.

    A flow scheduler's states are already z_sigma. A DDIM state at timestep t is x_t =
    sqrt(abar_t) z0 + sqrt(1 - abar_t) eps; divided by a + b it is (1 - sigma) z0 + sigma eps.
    """
    if not hasattr(scheduler, "alphas_cumprod"):
        return path
    abar = scheduler.alphas_cumprod
    # state 0 sits at timesteps[0]; state k at timesteps[k]; the last at DDIM's final alpha
    levels = [abar[int(t)] for t in scheduler.timesteps] + [scheduler.final_alpha_cumprod]
    a = torch.stack([torch.as_tensor(x) for x in levels]).sqrt()
    b = (1 - a**2).sqrt()
    return path / (a + b).view(-1, *([1] * (path.dim() - 1)))


def straightness(path: torch.Tensor) -> float:
    """Mean over images of |z_K - z_0| / sum_k |z_{k+1} - z_k|, for a path [K + 1, N, ...]."""
    flat = path.flatten(2)
    length = (flat[1:] - flat[:-1]).norm(dim=-1).sum(dim=0)
    return ((flat[-1] - flat[0]).norm(dim=-1) / length).mean().item()


def judged(result: dict, prompts: list[str]) -> dict:
    score = prompt_adherence(result["images"], prompts)
    return {k: round(score[k], 4) for k in ("color", "shape", "position", "all", "clean")} | {
        "unet_calls": result["calls"], "seconds": round(result["seconds"], 2)}


def _load(name: str, device):
    from ..models import load_pipeline

    pipe = load_pipeline(name, device=device, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_study(n_prompts: int = 192, seed: int = 0, device: str = "cpu",
              reflow: dict[str, str] | None = None, progress: bool = True) -> dict:
    """Every table of the module docstring; reflow's when ``reflow`` maps labels to reflowed
    pipelines (registry names or folders)."""
    from tqdm.auto import tqdm

    from .model import make_scheduler

    prompts = evaluation_prompts("seen", n_prompts, seed=seed)
    latents = torch.randn(n_prompts, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    flow, logit, vpred = (_load(n, device) for n in
                          ("tiny-shapes-flow", "tiny-shapes-flow-logit-normal", "tiny-shapes"))
    euler, ddim = flow.scheduler, vpred.scheduler
    configs = {
        "flow, Euler": (flow, euler),
        "flow, Heun": (flow, flow_heun(flow)),
        "v-prediction, DDIM": (vpred, ddim),
        "v-prediction, DPM-Solver++ 2M": (vpred, make_scheduler("dpm++", ddim.config)),
        "logit-normal flow, Euler": (logit, logit.scheduler),
    }
    bar = tqdm(desc="flow study", disable=not progress,
               total=len(configs) * len(STEP_COUNTS) + len(SHIFTS) * len(SHIFT_STEPS))
    adherence = {}
    for name, (pipe, scheduler) in configs.items():
        pipe.scheduler = scheduler
        adherence[name] = {}
        for steps in STEP_COUNTS:
            adherence[name][steps] = judged(sample(pipe, prompts, latents, steps, GUIDANCE),
                                            prompts)
            bar.update(1)
    shift = {}
    for s in SHIFTS:
        flow.scheduler = shifted_euler(flow, s)
        shift[s] = {}
        for steps in SHIFT_STEPS:
            shift[s][steps] = judged(sample(flow, prompts, latents, steps, GUIDANCE), prompts)
            bar.update(1)
    bar.close()
    flow.scheduler, vpred.scheduler = euler, ddim
    paths = {"flow, Euler": flow, "logit-normal flow, Euler": logit, "v-prediction, DDIM": vpred}
    straight = {name: {w: path_straightness(pipe, prompts, latents, w) for w in (1.0, GUIDANCE)}
                for name, pipe in paths.items()}
    study = {"adherence": adherence, "straightness": straight, "shift": shift}
    if reflow:
        students = {label: _load(folder, device) for label, folder in reflow.items()}
        study["reflow"] = reflow_rows({"teacher": flow} | students, prompts, latents)
    return study


def path_straightness(pipe, prompts, latents, guidance: float) -> float:
    result = sample(pipe, prompts, latents, STRAIGHTNESS_STEPS, guidance, keep_path=True)
    return round(straightness(flow_coordinates(result["path"], pipe.scheduler)), 4)


def reflow_rows(pipes: dict, prompts, latents) -> dict:
    """The teacher and each reflowed student, at guidance 1 and 3: adherence per step count,
    straightness, and how far each few-step image is (root mean square over pixels in [-1, 1])
    from the same model's own 50-step image and from the teacher's, from the same start noise.
    The first is what few steps lose; the second is how well a student reproduces the teacher's
    pairing of noise to image, which is what reflow trains on."""
    teacher = next(iter(pipes.values()))
    rows = {}
    for w in (1.0, GUIDANCE):
        reference = sample(teacher, prompts, latents, 50, w)["images"]
        for name, pipe in pipes.items():
            own = reference if pipe is teacher else sample(pipe, prompts, latents, 50, w)["images"]
            row = {"adherence": {}, "rms_to_own_50": {}, "rms_to_teacher_50": {}}
            for steps in REFLOW_STEPS:
                result = sample(pipe, prompts, latents, steps, w)
                row["adherence"][str(steps)] = judged(result, prompts)
                row["rms_to_own_50"][str(steps)] = _rms(result["images"] - own)
                row["rms_to_teacher_50"][str(steps)] = _rms(result["images"] - reference)
            row["straightness"] = path_straightness(pipe, prompts, latents, w)
            rows[f"{name}, w = {w:g}"] = row
    return rows


def _rms(difference: torch.Tensor) -> float:
    return round(difference.pow(2).mean().sqrt().item(), 4)


def markdown(report: dict) -> str:
    """The study's tables, as lesson 08 and the closing report print them."""
    study, lines = report["results"], []
    lines.append(f"{report['prompts']} prompts (seen split), seed {report['seed']}, guidance "
                 f"{report['guidance']:g}, on {report['device']}; cells: all three attributes "
                 "right (colour / shape / position), U-Net calls")
    header = "| sampler | " + " | ".join(f"{n} steps" for n in STEP_COUNTS) + " |"
    lines += ["", header, "|---" * (len(STEP_COUNTS) + 1) + "|"]
    for name, by_steps in study["adherence"].items():
        cells = [f"{r['all']:.0%} ({r['color']:.0%}/{r['shape']:.0%}/{r['position']:.0%}), "
                 f"{r['unet_calls']}" for r in by_steps.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| straightness, 50 steps | guidance 1 | guidance 3 |", "|---|---|---|"]
    for name, by_w in study["straightness"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in by_w.values()) + " |")
    lines += ["", "| flow, Euler, shift | " + " | ".join(f"{n} steps" for n in SHIFT_STEPS)
              + " |", "|---" * (len(SHIFT_STEPS) + 1) + "|"]
    for s, by_steps in study["shift"].items():
        lines.append(f"| {float(s):g} | " + " | ".join(f"{r['all']:.0%} ({r['color']:.0%}/"
                     f"{r['shape']:.0%}/{r['position']:.0%})" for r in by_steps.values()) + " |")
    if "reflow" in study:
        lines += ["", "| reflow | " + " | ".join(map(str, REFLOW_STEPS)) + " | straightness |",
                  "|---" * (len(REFLOW_STEPS) + 2) + "|"]
        for name, row in study["reflow"].items():
            lines.append(f"| {name} | " + " | ".join(
                f"{r['all']:.0%} ({r['color']:.0%}/{r['shape']:.0%}/{r['position']:.0%}), "
                f"rms {own:.3f} / {teacher:.3f}" for r, own, teacher in zip(
                    row["adherence"].values(), row["rms_to_own_50"].values(),
                    row["rms_to_teacher_50"].values()))
                + f" | {row['straightness']:.3f} |")
        lines.append("(rms: root mean square pixel distance to the model's own 50-step image / "
                     "to the teacher's, same start noise)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reflow", metavar="DIR", nargs="+", default=[],
                        help="reflowed pipelines to compare (python -m course train reflow)")
    parser.add_argument("--json", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    from ..training.record import device_name, versions

    students, records = {}, {}
    for folder in args.reflow:
        record = json.loads((Path(folder) / "training.json").read_text())
        label = f"reflow (pairs at w = {record['recipe']['pair_guidance']:g})"
        students[label] = folder
        records[label] = {k: record[k] for k in ("recipe", "pairs", "fine_tune",
                                                 "train_seconds", "device", "threads")}
    start = time.perf_counter()
    results = run_study(args.prompts, args.seed, args.device, students)
    report = {"date": datetime.date.today().isoformat(), "device": device_name(args.device),
              "machine": f"{platform.system()} {platform.machine()}, "
                         f"{torch.get_num_threads()} threads",
              "versions": versions("diffusers", "transformers"), "prompts": args.prompts,
              "seed": args.seed, "guidance": GUIDANCE, "hypotheses": HYPOTHESES,
              "study_seconds": round(time.perf_counter() - start, 1),
              "reflow_training": records,
              "results": results}
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
