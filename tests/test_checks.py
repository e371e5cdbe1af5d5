"""The check machinery: right answers pass, every kind of wrong answer fails with a reason."""

import math
import signal

import pytest
import torch

from course.checks import LESSONS, MIME, ExerciseReport, exercises_for, lesson01
from course.checks.core import Case, Exercise, compare_tensor, time_limit


# Right answers, written here (not taken from the package: checks refuse library code).
def forward_diffusion(x0, t, betas, noise=None):
    t = torch.as_tensor(t)
    if (t < 0).any() or (t >= len(betas)).any():
        raise ValueError("t out of range")
    noise = torch.randn_like(x0) if noise is None else noise
    alpha_bar = torch.cumprod(1 - betas.double(), 0)[t].to(x0.dtype)
    if alpha_bar.ndim == 1:
        alpha_bar = alpha_bar.view(-1, *[1] * (x0.ndim - 1))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, noise


def cosine_beta_schedule(T, s=0.008, max_beta=0.999):
    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)])


def test_every_lesson_module_loads():
    for lesson in LESSONS:
        assert isinstance(exercises_for(lesson), list)
    with pytest.raises(KeyError, match="no checks"):
        exercises_for("99")


@pytest.mark.parametrize("exercise, fn", [(lesson01.forward_diffusion, forward_diffusion),
                                          (lesson01.cosine_beta_schedule, cosine_beta_schedule)])
def test_right_answers_pass_public_and_hidden_cases(exercise, fn):
    report = exercise.run(fn, include_hidden=True)
    assert report.passed, str(report)
    assert report.score == exercise.points
    assert any(c.hidden for c in report.cases) and any(not c.hidden for c in report.cases)
    assert len(exercise.run(fn).cases) < len(report.cases)  # hidden cases only when grading


def _statuses(report):
    return [c.status for c in report.cases]


def test_not_implemented_is_reported_as_such():
    def stub(x0, t, betas, noise=None):
        raise NotImplementedError()

    report = lesson01.forward_diffusion.run(stub)
    assert set(_statuses(report)) == {"not implemented"} and report.score == 0
    assert "NotImplementedError" in report.cases[0].message


def test_exception_in_learner_code_names_the_line():
    def broken(x0, t, betas, noise=None):
        alpha_bar = torch.cumprod(1 - betas, 0)[t]
        return alpha_bar * x0 + undefined_name, noise  # noqa: F821

    report = lesson01.forward_diffusion.run(broken)
    first = report.cases[0]
    assert first.status == "error"
    assert "NameError" in first.message and "in broken, line" in first.message
    assert first.hint  # errors come with the hint


def test_wrong_values_shape_dtype_and_nan_are_explained():
    def scaled_wrong(x0, t, betas, noise=None):
        x_t, noise = forward_diffusion(x0, t, betas, noise)
        return x_t * 1.01, noise

    def wrong_shape(x0, t, betas, noise=None):
        x_t, noise = forward_diffusion(x0, t, betas, noise)
        return x_t[0], noise

    def wrong_dtype(x0, t, betas, noise=None):
        x_t, noise = forward_diffusion(x0, t, betas, noise)
        return x_t.double(), noise

    def with_nan(x0, t, betas, noise=None):
        x_t, noise = forward_diffusion(x0, t, betas, noise)
        return x_t * float("nan"), noise

    def not_a_tuple(x0, t, betas, noise=None):
        return forward_diffusion(x0, t, betas, noise)[0]

    expectations = {scaled_wrong: "values differ", wrong_shape: "expected shape",
                    wrong_dtype: "expected dtype torch.float32, got torch.float64",
                    with_nan: "NaN or inf", not_a_tuple: "expected a tuple (x_t, noise)"}
    for fn, phrase in expectations.items():
        first = lesson01.forward_diffusion.run(fn).cases[0]
        assert first.status == "fail" and phrase in first.message, (fn.__name__, first.message)


def test_missing_raise_is_a_failure():
    def never_raises(x0, t, betas, noise=None):
        return forward_diffusion(x0, min(int(torch.as_tensor(t).max()), len(betas) - 1), betas,
                                 noise)

    report = lesson01.forward_diffusion.run(never_raises)
    out_of_range = [c for c in report.cases if "raise ValueError" in c.name][0]
    assert out_of_range.status == "fail" and "expected ValueError" in out_of_range.message


def test_endless_loop_times_out_once_and_kernel_goes_on():
    exercise = Exercise("loop", "loop", cases=[
        Case("first", lambda: {"x": 1}, lambda i, g: None),
        Case("second", lambda: {"x": 2}, lambda i, g: None),
    ], time_limit=0.5)

    def loop(x):
        while True:
            try:
                pass
            except Exception:  # a learner's catch-all must not swallow the time limit
                pass

    report = exercise.run(loop)
    assert _statuses(report) == ["timeout", "missing"]
    assert "did not return within 0.5 s" in report.cases[0].message
    assert "earlier case" in report.cases[1].message
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


def test_time_limit_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGALRM)
    with time_limit(5):
        pass
    assert signal.getsignal(signal.SIGALRM) is before


@pytest.mark.parametrize("value, phrase", [(None, "no function named"), (3, "got 3"),
                                           ("text", "expected a function")])
def test_non_callables_are_refused(value, phrase):
    report = lesson01.forward_diffusion.run(value)
    assert set(_statuses(report)) == {"missing"} and phrase in report.cases[0].message


def test_library_implementations_are_refused():
    import course.diffusion

    report = lesson01.forward_diffusion.run(course.diffusion.forward_diffusion)
    assert set(_statuses(report)) == {"missing"}
    assert "not yours" in report.cases[0].message


def test_changing_an_input_in_place_fails():
    def in_place(x0, t, betas, noise=None):
        x_t, noise = forward_diffusion(x0, t, betas, noise)
        x0.zero_()
        return x_t, noise

    first = lesson01.forward_diffusion.run(in_place).cases[0]
    assert first.status == "fail" and "changed its input x0 in place" in first.message


def test_report_round_trips_and_renders():
    report = lesson01.cosine_beta_schedule.run(lambda T: torch.zeros(T))
    bundle = report._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", MIME}
    again = ExerciseReport.from_json(bundle[MIME])
    assert again.score == report.score == 0 and str(again) == str(report)
    assert "NOT YET" in bundle["text/plain"] and "<table" in bundle["text/html"]
    assert bundle[MIME]["passed"] is False


def test_html_escapes_learner_text():
    def shouty(T):
        raise ValueError("<script>alert(1)</script>")

    html = lesson01.cosine_beta_schedule.run(shouty)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_compare_tensor_order_of_complaints():
    expected = torch.zeros(2, 3)
    assert compare_tensor("x", [0.0], expected).startswith("x: expected a torch.Tensor")
    assert "expected shape [2, 3], got [3, 2]" in compare_tensor("x", torch.zeros(3, 2), expected)
    assert "expected dtype" in compare_tensor("x", torch.zeros(2, 3, dtype=torch.int64), expected)
    assert compare_tensor("x", torch.full((2, 3), 1e-7), expected) is None


def test_calling_an_exercise_displays_without_raising(capsys):
    lesson01.cosine_beta_schedule(lambda T: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


# Lessons 02 and 03: right answers (written here) pass every case, a stub passes none.
def _lesson02_03_answers():
    import torch.nn.functional as F

    def timestep_embedding(t, dim):
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def ddpm_loss(model, x0, t, noise, betas):
        alpha_bar = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)
        return F.mse_loss(model(alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, t), noise)

    def ddpm_step(x_t, eps, t, betas, noise=None):
        alpha_bar = torch.cumprod(1 - betas.double(), 0)
        prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        mean = (x_t - betas[t] / (1 - alpha_bar[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
        if t == 0:
            return mean.float()
        return (mean + (betas[t] * (1 - prev) / (1 - alpha_bar[t])).sqrt() * noise).float()

    def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None):
        a, p = torch.tensor(alpha_bar_t), torch.tensor(alpha_bar_prev)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        sigma = eta * ((1 - p) / (1 - a) * (1 - a / p)).sqrt()
        out = p.sqrt() * x0 + (1 - p - sigma**2).sqrt() * eps
        return out + sigma * noise if eta else out

    def sample_with_scheduler(model, scheduler, noise, steps):
        scheduler.set_timesteps(steps)
        x = noise * scheduler.init_noise_sigma
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = model(scheduler.scale_model_input(x, t), t.expand(len(x)))
                x = scheduler.step(eps, t, x).prev_sample
        return x

    return locals()


@pytest.mark.parametrize("lesson", ["02", "03"])
def test_lessons_02_03_accept_right_answers_and_reject_stubs(lesson):
    answers = _lesson02_03_answers()

    def stub(*args, **kwargs):
        raise NotImplementedError()

    for exercise in exercises_for(lesson):
        report = exercise.run(answers[exercise.function], include_hidden=True)
        assert report.passed, str(report)
        assert exercise.run(stub).score == 0


def test_sampling_loop_check_catches_a_missing_init_noise_sigma():
    from course.checks import lesson03

    def forgetful(model, scheduler, noise, steps):
        scheduler.set_timesteps(steps)
        x = noise
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t.expand(len(x))), t,
                               x).prev_sample
        return x.detach()

    report = lesson03.sample_with_scheduler.run(forgetful)
    statuses = {c.name: c.status for c in report.cases}
    assert statuses["DDIMScheduler, 10 steps"] == "pass"  # init_noise_sigma is 1 for DDIM
    assert statuses["EulerDiscreteScheduler, 10 steps"] == "fail"


def test_loss_check_compares_gradients():
    from course.checks import lesson02

    def detached_model_loss(model, x0, t, noise, betas):
        alpha_bar = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        with torch.no_grad():
            prediction = model(x_t, t)
        return ((prediction - noise) ** 2).mean().requires_grad_()

    first = lesson02.ddpm_loss.run(detached_model_loss).cases[0]
    assert first.status == "fail" and "does not depend on the model" in first.message
