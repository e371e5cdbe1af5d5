"""Lesson 08's measured comparison (``course.tinysd.flow_study``): its measuring pieces on known
paths and the bundled pipelines, and the report's tables."""

import torch

from course.models import load_pipeline
from course.tinysd.flow_study import (
    HYPOTHESES,
    REFLOW_STEPS,
    STEP_COUNTS,
    flow_coordinates,
    flow_heun,
    markdown,
    sample,
    straightness,
)
from course.tinysd.model import make_scheduler


def test_straightness_is_one_on_a_line_and_less_on_a_detour():
    start, end = torch.zeros(3, 4), torch.ones(3, 4)
    line = torch.stack([start + k / 10 * (end - start) for k in range(11)])
    assert abs(straightness(line) - 1.0) < 1e-6
    corner = torch.stack([start, torch.tensor([[1.0, 1, 0, 0]] * 3), end])
    assert abs(straightness(corner) - 2 ** 0.5 / 2) < 1e-6  # |end| = 2, the path 1.41 + 1.41


def test_a_ddim_path_of_one_pair_is_straight_in_flow_coordinates():
    """x_t = a z0 + b eps bends in x (a and b are not 1 - sigma and sigma); divided by a + b it is
    the straight path of flow matching, straightness 1, ending near z0."""
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(20)
    abar = list(scheduler.alphas_cumprod[scheduler.timesteps]) + [scheduler.final_alpha_cumprod]
    gen = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(2, 5, 4, 3, 3, generator=gen)
    path = torch.stack([a.sqrt() * z0 + (1 - a).sqrt() * eps for a in abar])
    assert straightness(path) < 0.95
    flat = flow_coordinates(path, scheduler)
    assert abs(straightness(flat) - 1.0) < 1e-5
    torch.testing.assert_close(flat[0], eps)  # zero terminal SNR: the first state is the noise


def test_flow_states_are_kept_as_they_are():
    pipe = load_pipeline("tiny-shapes-flow", device="cpu", dtype=torch.float32)
    path = torch.randn(5, 2, 4, 3, 3)
    assert flow_coordinates(path, pipe.scheduler) is path


def test_sample_counts_unet_calls_and_keeps_the_path():
    pipe = load_pipeline("tiny-shapes-flow", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle on the left", "a blue square at the top"]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    euler = sample(pipe, prompts, latents, 3, 3.0, keep_path=True)
    assert euler["calls"] == 3 and euler["path"].shape == (4, 2, 4, 16, 16)
    assert euler["images"].shape == (2, 3, 32, 32) and -1 <= euler["images"].min()
    torch.testing.assert_close(euler["path"][0], latents)
    assert sample(pipe, prompts, latents, "2 even", 1.0)["calls"] == 2
    pipe.scheduler = flow_heun(pipe)
    assert sample(pipe, prompts, latents, 3, 3.0)["calls"] == 5  # Heun: 2n - 1


def test_dpm_solver_runs_on_the_v_prediction_pipeline_from_one_step():
    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for steps in (1, 2):
        result = sample(pipe, ["a red circle on the left"], latents, steps, 3.0)
        assert result["calls"] == steps and torch.isfinite(result["images"]).all()


def test_the_report_prints_every_table():
    row = {"color": 1.0, "shape": 1.0, "position": 0.5, "all": 0.5, "clean": 1.0,
           "unet_calls": 4, "seconds": 0.1}
    results = {
        "adherence": {"flow, Euler": {n: row for n in STEP_COUNTS}},
        "straightness": {"flow, Euler": {1.0: 0.99, 3.0: 0.97}},
        "shift": {1.0: {n: row for n in (2, 4)}},
        "reflow": {"teacher, w = 1": {
            "adherence": {str(n): row for n in REFLOW_STEPS},
            "rms_to_own_50": {str(n): 0.1 for n in REFLOW_STEPS},
            "rms_to_teacher_50": {str(n): 0.2 for n in REFLOW_STEPS}, "straightness": 0.98}}}
    text = markdown({"prompts": 4, "seed": 0, "guidance": 3.0, "device": "cpu",
                     "results": results})
    assert "| flow, Euler | 50% (100%/100%/50%), 4 |" in text
    assert "| flow, Euler | 0.990 | 0.970 |" in text
    assert "rms 0.100 / 0.200" in text and "| 0.980 |" in text
    assert set(HYPOTHESES) == {"solvers", "straightness", "time sampling", "shift", "reflow"}
