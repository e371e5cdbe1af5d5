"""Lesson 03's scheduler comparison: counted model calls, one scheduler list, the table's text."""

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
)

from course.sampling import (
    CountingModel,
    compare_schedulers,
    describe_scheduler,
    describe_table,
    format_rows,
    module_schedulers,
    scheduler_sample,
)


class Zero(torch.nn.Module):
    """Predicts no noise at all: cheap, and enough to drive any scheduler's loop."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the sampler a device

    def forward(self, x, t):
        return torch.zeros_like(x)


def calls(scheduler, steps):
    counter = CountingModel(Zero())
    scheduler_sample(counter, scheduler, 1, steps, size=4,
                     generator=torch.Generator().manual_seed(0))
    return counter.calls


@pytest.mark.parametrize(("kind", "steps", "expected"), [
    (DDPMScheduler, 10, 10), (DDIMScheduler, 10, 10), (EulerDiscreteScheduler, 10, 10),
    (DPMSolverMultistepScheduler, 10, 10),
    (PNDMScheduler, 10, 19),  # Runge-Kutta warm-up: four calls a step at first
    (HeunDiscreteScheduler, 10, 19),  # two calls a step, one on the last
])
def test_model_calls_are_counted_not_assumed(kind, steps, expected):
    assert calls(kind(num_train_timesteps=1000), steps) == expected


def test_the_module_list_runs_pndm_without_its_runge_kutta_warm_up():
    schedulers = module_schedulers()
    pndm = schedulers["PNDM"](num_train_timesteps=1000, beta_schedule="linear")
    assert pndm.config.skip_prk_steps is True
    assert [calls(pndm, steps) for steps in (10, 20, 50)] == [11, 21, 51]
    for name in ("DDPM", "DDIM", "Euler", "DPM-Solver++", "DPM-Solver++ (SDE)"):
        assert calls(schedulers[name](num_train_timesteps=1000), 10) == 10, name
    assert describe_scheduler(schedulers["PNDM"]) == "PNDMScheduler(skip_prk_steps=True)"
    assert describe_scheduler(schedulers["DDIM"]) == "DDIMScheduler()"


def test_compare_schedulers_counts_calls_and_leaves_the_global_rng_alone():
    schedulers = {k: v for k, v in module_schedulers().items() if k in ("DDPM", "PNDM")}
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    rows = compare_schedulers(Zero(), schedulers, (2, 3), n=2, reference=("DDPM", 4),
                              progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert [(r["scheduler"], r["steps"], r["nfe"]) for r in rows] == [
        ("DDPM", 2, 2), ("DDPM", 3, 3), ("PNDM", 2, 3), ("PNDM", 3, 4), ("DDPM", 4, 4)]
    assert all(set(r) == {"scheduler", "steps", "nfe", "clean", "ms_per_image"} for r in rows)
    assert compare_schedulers(Zero(), schedulers, (2,), n=1, reference=None, progress=False)[-1][
        "scheduler"] == "PNDM"


def test_table_text_and_provenance():
    rows = [{"scheduler": "DDIM", "steps": 10, "nfe": 10, "clean": 0.957, "ms_per_image": 71.94}]
    text = format_rows(rows)
    assert text.splitlines()[0].split() == ["scheduler", "steps", "NFE", "clean", "ms", "/",
                                            "image"]
    assert text.splitlines()[1].split() == ["DDIM", "10", "10", "95.7%", "71.9"]
    table = {"date": "2026-01-02", "machine": {"platform": "Linux x86_64", "cpu_count": 16,
                                               "gpu": "NVIDIA H200"},
             "versions": {"python": "3.12.1", "torch": "2.11.0"}, "device": "cuda",
             "n_images": 256, "command": "python -m course bench --quality-only --device cuda"}
    line = describe_table(table)
    for part in ("2026-01-02", "NVIDIA H200", "device cuda", "torch 2.11.0", "256 images a row",
                 "Reproduce: python -m course bench --quality-only --device cuda"):
        assert part in line
