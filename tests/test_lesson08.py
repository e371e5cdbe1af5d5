"""Lesson 08: its checks pass the right answers, written as a learner would (hidden cases too),
fail wrong answers the known mistakes do not cover, compare the logit-normal times as
distributions (another seed or another way to draw passes as well); and its notebooks' rules."""

import ast

import nbformat
import pytest
import torch

from course import REPO_URL
from course.checks import Status, lesson08
from course.diffusion.flow import logit_normal_sigmas
from tests.helpers import LESSONS, SOLUTIONS, as_learner

NOTEBOOKS = [p for p in SOLUTIONS + LESSONS if p.name.startswith("08_")]


def right_loss(predict, x0, noise, sigma):
    s = sigma.view(-1, 1, 1, 1)
    x_sigma = (1 - s) * x0 + s * noise
    return ((predict(x_sigma, sigma) - (noise - x0)) ** 2).mean()


def right_sample(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    s = torch.linspace(1.0, sigma_min, steps)
    s = shift * s / (1 + (shift - 1) * s)
    sigmas = torch.cat([s, torch.zeros(1)]).tolist()
    x = x1
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (sigma_next - sigma) * velocity(x, sigma)
    return x


def right_times(n, generator, mean=0.0, std=1.0):
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


def other_right_times(n, generator, mean=0.0, std=1.0):
    """The same density from a generator of its own and another op: not the same values."""
    u = torch.empty(n).normal_(mean, std, generator=torch.Generator().manual_seed(123))
    return 1 / (1 + torch.exp(-u))


def statuses(exercise, fn):
    return [case.status for case in exercise.run(as_learner(fn), include_hidden=True).cases]


def test_right_answers_pass_every_case():
    for exercise, fn in ((lesson08.flow_matching_loss, right_loss),
                         (lesson08.flow_sample, right_sample),
                         (lesson08.logit_normal_timesteps, right_times),
                         (lesson08.logit_normal_timesteps, other_right_times)):
        assert set(statuses(exercise, fn)) == {Status.PASS}, exercise.name


def test_unknown_wrong_answers_fail_without_a_name():
    def sum_not_mean(predict, x0, noise, sigma):
        return right_loss(predict, x0, noise, sigma) * x0.numel()

    def one_step_short(velocity, x1, steps, shift=1.0, sigma_min=0.001):
        return right_sample(velocity, x1, max(steps - 1, 1), shift, sigma_min) + 1e-2

    def too_narrow(n, generator, mean=0.0, std=1.0):
        return right_times(n, generator, mean, std * 0.7)

    for exercise, fn in ((lesson08.flow_matching_loss, sum_not_mean),
                         (lesson08.flow_sample, one_step_short),
                         (lesson08.logit_normal_timesteps, too_narrow)):
        report = exercise.run(as_learner(fn), include_hidden=True)
        failed = [case for case in report.cases if case.status == Status.FAIL]
        assert failed and not any(case.mistake for case in failed), str(report)


def test_the_logit_normal_check_says_which_quantile_is_off():
    report = lesson08.logit_normal_timesteps.run(
        as_learner(lambda n, generator, mean=0.0, std=1.0: torch.rand(n, generator=generator)))
    first = report.cases[0]
    assert first.status == Status.FAIL and first.mistake == "uniform times"
    assert "quantile" in first.message and "diffusers'" in first.message


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    lesson08.flow_sample.run(as_learner(right_sample))
    lesson08.logit_normal_timesteps.run(as_learner(right_times))
    assert torch.equal(before, torch.get_rng_state())


def test_every_exercise_has_hidden_cases_mistakes_and_tiered_hints():
    assert [e.name for e in lesson08.EXERCISES] == ["flow_matching_loss", "flow_sample",
                                                    "logit_normal_timesteps"]
    for exercise in lesson08.EXERCISES:
        assert any(case.hidden for case in exercise.cases), exercise.name
        assert any(not case.hidden for case in exercise.cases), exercise.name
        assert len(exercise.mistakes) >= 3 and len(exercise.hints) >= 3, exercise.name


def test_the_library_copy_is_refused():
    report = lesson08.logit_normal_timesteps.run(logit_normal_sigmas)
    assert {case.status for case in report.cases} == {Status.MISSING}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_rules(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["course"] == {"lesson": "08"}
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    body = ast.parse(parameters[0].source).body
    assert all(isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Tuple))
               for node in body)
    assert {"FAST", "DEVICE", "SEED", "TOY_STEPS", "STEP_COUNTS"} <= {n.targets[0].id for n in body}
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for name in ("flow_matching_loss", "flow_sample", "logit_normal_timesteps"):
        assert f'check.hint("{name}")' in text
    assert f"{REPO_URL}/blob/main/course/diffusion/flow.py" in text
    for paper in ("2210.02747", "2209.03003", "2209.15571", "2403.03206", "2506.02070"):
        assert f"https://arxiv.org/abs/{paper}" in text
    assert "scheduling_flow_match_euler_discrete.py" in text
