"""The check machinery: right answers pass, every kind of wrong answer fails with a reason."""

import json
import math
import random
import signal

import numpy as np
import pytest
import torch

from course.checks import (
    MIME,
    Answer,
    Case,
    Exercise,
    Mistake,
    Status,
    compare_tensor,
    exercises_for,
    find_exercise,
    hint,
    lesson01,
    lessons,
    next_hint,
    reset_hints,
    time_limit,
)
from course.checks.catalog import CATALOG
from course.checks.judging import same_answer
from course.checks.limits import preserved_rng
from course.checks.oracles import bundled_tiny_pipeline
from tests.helpers import as_learner, forward_diffusion
from tests.helpers import sample_with_scheduler as right_sample_with_scheduler


# Right answers, written here (not taken from the package: checks refuse library code).
def cosine_beta_schedule(T, s=0.008, max_beta=0.999):
    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)])


def test_every_lesson_module_loads():
    for lesson in lessons():
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


def test_passes_says_whether_every_public_case_passes_and_shows_nothing(capsys):
    from course.diffusion import forward_diffusion

    def stub(x0, t, betas, noise=None):
        raise NotImplementedError()

    def right(x0, t, betas, noise=None):
        return forward_diffusion(x0, t, betas, noise)

    def almost(x0, t, betas, noise=None):  # right except on the first timestep of a batch
        x_t, eps = forward_diffusion(x0, t, betas, noise)
        return x_t.clone().index_fill_(0, torch.tensor([0]), 0.0), eps

    assert lesson01.forward_diffusion.passes(right) is True
    assert lesson01.forward_diffusion.passes(stub) is False
    assert lesson01.forward_diffusion.passes(almost) is False
    assert capsys.readouterr().out == ""


def test_exception_in_learner_code_names_the_line():
    def broken(x0, t, betas, noise=None):
        alpha_bar = torch.cumprod(1 - betas, 0)[t]
        return alpha_bar * x0 + undefined_name, noise  # noqa: F821

    report = lesson01.forward_diffusion.run(broken)
    first = report.cases[0]
    assert first.status == "error"
    assert "NameError" in first.message and "in broken, line" in first.message
    assert 'check.hint("forward_diffusion")' in str(report)  # the way to a hint, not the hint


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


def test_report_renders_as_text_html_and_json():
    report = lesson01.cosine_beta_schedule.run(lambda T: torch.zeros(T))
    bundle = report._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", MIME}
    assert "NOT YET" in bundle["text/plain"] and "<table" in bundle["text/html"]
    # what a notebook stores: plain JSON, statuses as the strings they always were
    data = json.loads(json.dumps(bundle[MIME]))
    assert data["passed"] is False and data["score"] == report.score == 0
    assert {c["status"] for c in data["cases"]} == {"fail"}
    assert set(data["cases"][0]) == {"name", "hidden", "status", "message", "seconds",
                                     "mistake", "mistake_explanation"}


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

    sample_with_scheduler = right_sample_with_scheduler  # noqa: F841 - returned by locals()
    return locals()


@pytest.mark.parametrize("lesson", ["02", "03"])
def test_lessons_02_03_accept_right_answers_and_reject_stubs(lesson):
    answers = _lesson02_03_answers()

    def stub(*args, **kwargs):
        raise NotImplementedError()

    for exercise in exercises_for(lesson):
        assert exercise.run(stub).score == 0
        if exercise.function in answers:  # exercises added since are tested with their lesson
            report = exercise.run(answers[exercise.function], include_hidden=True)
            assert report.passed, str(report)


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


# --------------------------------------------------------------------------------------------
# Tiered help: the symptom with its index, a known mistake by name, hints on request
# --------------------------------------------------------------------------------------------


def test_mismatch_gives_a_tensor_index_not_a_flat_one():
    expected = torch.zeros(2, 3, 8, 8)
    got = expected.clone()
    got[0, 2, 5, 7] = 1.0
    problem = compare_tensor("x", got, expected)
    assert "at index (b=0, c=2, h=5, w=7)" in problem and "differ in 1 of 384" in problem
    matrix = torch.zeros(2, 4)
    wrong = matrix.clone()
    wrong[1, 3] = 5.0
    assert "at index (1, 3)" in compare_tensor("m", wrong, matrix)
    with_nan = expected.clone()
    with_nan[1, 0, 2, 3] = float("nan")
    assert "the first at index (b=1, c=0, h=2, w=3)" in compare_tensor("x", with_nan, expected)


def l2_norm(x):
    """The right answer to the toy exercise below."""
    return x.pow(2).sum(-1).sqrt()


def _norm_exercise(**extra):
    def verify(inputs, got):
        return compare_tensor("norm", got, torch.linalg.vector_norm(inputs["x"], dim=-1))

    def make():
        return {"x": torch.randn(3, 5, generator=torch.Generator().manual_seed(0))}

    options = {"mistakes": [
        Mistake("no square root", lambda x: x.pow(2).sum(-1),
                "the sum of squares is the squared length, one step short."),
        Mistake("wrong axis", lambda x: x.pow(2).sum(0).sqrt(),
                "the sum ran over the batch instead of over each vector's entries."),
    ], "hints": ["A length is a square root of something.", "Sum the squares of each row.",
                 "return x.pow(2).sum(-1).sqrt()"]}
    options.update(extra)
    return Exercise("toy_norm", "l2_norm", [Case("3 vectors of 5", make, verify)], **options)


def test_a_wrong_answer_equal_to_a_known_mistake_is_named():
    exercise = _norm_exercise()
    report = exercise.run(lambda x: x.pow(2).sum(-1))
    case = report.cases[0]
    assert case.status == "fail" and case.mistake == "no square root"
    text = str(report)
    symptom = text.index("values differ")
    named = text.index("This matches a known mistake: no square root — the sum of squares")
    assert symptom < named < text.index('check.hint("toy_norm")')  # tier 1, tier 2, the way on
    assert "This matches a known mistake" in report._repr_html_()


def test_a_wrong_answer_unlike_every_mistake_names_none():
    report = _norm_exercise().run(lambda x: x.abs().sum(-1))
    case = report.cases[0]
    assert case.status == "fail" and case.mistake == "" and "known mistake" not in str(report)
    assert _norm_exercise().run(l2_norm).passed


def test_mistakes_that_raise_or_loop_match_nothing_and_crash_nothing():
    def endless(x):
        while True:
            pass

    broken = [Mistake("raises", lambda x: 1 / 0, "-"), Mistake("loops", endless, "-"),
              Mistake("no square root", lambda x: x.pow(2).sum(-1), "one step short.")]
    exercise = _norm_exercise(mistakes=broken, time_limit=0.5)
    case = exercise.run(lambda x: x.pow(2).sum(-1)).cases[0]
    assert case.status == "fail" and case.mistake == ""  # the loop used up the time: no claim
    assert case.seconds < 2.0 and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    exercise = _norm_exercise(mistakes=broken[:1] + broken[2:])
    assert exercise.run(lambda x: x.pow(2).sum(-1)).cases[0].mistake == "no square root"


def test_mistakes_run_on_untouched_inputs_and_see_the_learners_random_draws():
    def learner(x):
        x.mul_(0)  # spoils its own copy: the mistake must still see the original inputs
        return torch.randn(3)

    exercise = _norm_exercise(mistakes=[Mistake("noise instead of a norm",
                                                lambda x: torch.randn(3), "random draws.")])
    case = exercise.run(learner).cases[0]
    assert "in place" in case.message and case.mistake == "noise instead of a norm"


def test_same_answer_compares_tensors_tuples_and_numbers():
    a = torch.ones(2, 3)
    assert same_answer(a, a + 1e-6) and not same_answer(a, a + 1e-2)
    assert not same_answer(a, a.double()) and not same_answer(a, a[0])
    assert same_answer((a, [a, 2.0]), (a.clone(), [a.clone(), 2.0]))
    assert not same_answer((a, a), (a,)) and not same_answer(a * float("nan"), a * float("nan"))
    assert not same_answer("text", "text") and same_answer(None, None)


def test_the_solution_is_not_in_the_default_report():
    exercise = _norm_exercise()
    bundle = exercise.run(lambda x: x.sum(-1))._repr_mimebundle_()
    assert 'check.hint("toy_norm")' in bundle["text/plain"]
    for rendered in (bundle["text/plain"], bundle["text/html"], str(bundle[MIME])):
        assert exercise.hints[-1] not in rendered and exercise.hints[0] not in rendered


def test_hints_advance_one_tier_per_call_and_end_with_the_solution(capsys):
    exercise = _norm_exercise()
    reset_hints("toy_norm")
    shown = [next_hint(exercise) for _ in range(4)]
    assert [h.number for h in shown] == [1, 2, 3, 3]  # asking again repeats the solution
    assert [h.text for h in shown[:3]] == exercise.hints
    assert [h.is_solution for h in shown] == [False, False, True, True]
    assert "solution" in str(shown[2]) and "solution" not in str(shown[0])
    assert 'check.hint("toy_norm") again' in str(shown[0])
    reset_hints("toy_norm")
    hint(exercise)  # plain Python: printed
    exercise.hint()
    hint(exercise)
    out = capsys.readouterr().out
    assert exercise.hints[0] in out and exercise.hints[1] in out and "the solution" in out
    assert "course-hint" in shown[0]._repr_html_()
    assert "no hints yet" in str(next_hint(Exercise("toy_bare", "g", [])))


def test_a_declared_exercise_is_found_by_its_name_or_its_functions_name(capsys):
    reset_hints("forward_diffusion")
    hint("forward_diffusion")
    hint(forward_diffusion)  # the learner's function finds its exercise by name
    out = capsys.readouterr().out
    assert "hint 1 of" in out and "hint 2 of" in out
    assert lesson01.forward_diffusion.hints[1] in out
    reset_hints("forward_diffusion")
    assert find_exercise("forward_diffusion") is lesson01.forward_diffusion
    assert find_exercise(forward_diffusion) is lesson01.forward_diffusion
    assert find_exercise("toy_norm") is None  # only what a lesson declares


def test_hint_for_an_unknown_name_lists_the_known_ones(capsys):
    hint("no_such_exercise")
    out = capsys.readouterr().out
    assert "no exercise named 'no_such_exercise'" in out
    assert "forward_diffusion" in out and "to_model_range" in out and "Traceback" not in out


def test_badly_written_mistakes_and_hints_fail_when_the_lesson_loads():
    with pytest.raises(TypeError, match="Mistake"):
        Exercise("toy_bad", "f", [], mistakes=[lambda x: x])
    with pytest.raises(TypeError, match="hints"):
        Exercise("toy_bad", "f", [], hints=[""])


def test_a_named_mistake_is_in_the_json_copy():
    report = _norm_exercise().run(lambda x: x.pow(2).sum(-1))
    data = json.loads(json.dumps(report._repr_mimebundle_()[MIME]))
    assert data["cases"][0]["mistake"] == "no square root" and data["hint_tiers"] == 3
    assert data["cases"][0]["mistake_explanation"].startswith("the sum of squares")


# --------------------------------------------------------------------------------------------
# A check never changes the learner's global random state
# --------------------------------------------------------------------------------------------


def _random_states():
    return (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())


def _assert_same_states(before, after, what):
    assert torch.equal(before[0], after[0]), f"{what} changed torch's global RNG"
    assert before[1] == after[1], f"{what} changed Python's random state"
    assert np.array_equal(before[2], after[2]), f"{what} changed NumPy's global RNG"


def _greedy(**inputs):
    """A wrong answer that draws from every global generator, as a learner's code may."""
    torch.randn(5)
    random.random()
    np.random.rand(3)
    return torch.zeros(1)


def _stub(**inputs):
    raise NotImplementedError()



def _answers_for(exercise):
    right = {**_lesson02_03_answers(), "forward_diffusion": forward_diffusion,
             "cosine_beta_schedule": cosine_beta_schedule}
    # The known mistakes make good wrong answers; wrapped, as checks refuse the package's code.
    # Two are enough: every wrong answer already makes the check replay all the known mistakes
    # (to name the closest), and each answer costs a full run of the cases (seconds in 05-06).
    answers = [_greedy, _stub] + [as_learner(m.fn) for m in exercise.mistakes[:2]]
    return answers + ([right[exercise.function]] if exercise.function in right else [])


@pytest.mark.parametrize("lesson", sorted(lessons()))
def test_checks_leave_the_learners_random_state_alone(lesson):
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    queued_for_cuda = len(getattr(torch.cuda, "_queued_calls", []))
    for exercise in CATALOG.declared(lesson):  # lesson 00's demo too
        for answer in _answers_for(exercise):
            before = _random_states()
            report = exercise.run(answer, include_hidden=True)
            _assert_same_states(before, _random_states(), f"{exercise.name} on {answer}")
            assert "missing" not in {c.status for c in report.cases}, str(report)
    # torch.manual_seed before CUDA starts queues a CUDA seeding that would outlive the check
    assert len(getattr(torch.cuda, "_queued_calls", [])) == queued_for_cuda


@pytest.mark.parametrize("lesson", sorted(lessons()))
def test_cases_build_their_inputs_without_touching_the_global_rng(lesson):
    """Cases draw from generators of their own, never from (or into) the global one.

    ``Exercise.run`` would undo it, but a grader or a test that builds a case's inputs directly
    must not find its random state changed either.
    """
    for exercise in CATALOG.declared(lesson):
        for case in exercise.cases:
            before = _random_states()
            case.make_inputs()
            _assert_same_states(before, _random_states(), f"{exercise.name}: {case.name!r}")


def test_preserved_rng_restores_after_an_exception():
    before = _random_states()
    with pytest.raises(RuntimeError), preserved_rng():
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        raise RuntimeError
    _assert_same_states(before, _random_states(), "preserved_rng")


# --------------------------------------------------------------------------------------------
# Calling and judging apart, as the grader does (learner code in the kernel, verdicts outside)
# --------------------------------------------------------------------------------------------


def test_call_reports_what_happened_and_judge_gives_the_verdict():
    exercise, case = _norm_exercise(), _norm_exercise().cases[0]
    inputs = case.make_inputs()
    answer = exercise.call(lambda x: x.pow(2).sum(-1), case, inputs)
    assert answer.status == "returned" and answer.changed == []
    assert torch.equal(inputs["x"], case.make_inputs()["x"])  # the caller's inputs untouched
    verdict = exercise.judge(case, inputs, answer)
    assert verdict.status == "fail" and verdict.mistake == "no square root"
    # The grader rebuilds the answer from the data the kernel sent back.
    handed_back = Answer("returned", l2_norm(case.make_inputs()["x"]))
    assert exercise.judge(case, inputs, handed_back).passed
    assert exercise.judge(case, inputs, Answer("returned", inputs["x"], changed=["x"])).status \
        == "fail"
    for status in ("error", "timeout", "not implemented", "missing"):
        assert exercise.judge(case, inputs, Answer(status, message="why")).status == status
    assert exercise.call(None, case, inputs).status == "missing"
    # what the grader reads back from a forged answer: any other status is no answer
    forged = exercise.judge(case, inputs, Answer("pass", message="trust me"))
    assert forged.status is Status.ERROR and "unreadable answer" in forged.message
    before = _random_states()
    exercise.judge(case, inputs, exercise.call(_greedy, case, inputs))
    _assert_same_states(before, _random_states(), "call and judge")


def test_an_expected_exception_is_reported_as_raised_and_judged_a_pass():
    raising = Case("t out of range", dict, raises=ValueError)
    exercise = Exercise("toy_raise", "f", [raising])

    def f():
        raise ValueError("t must be in [0, T)")

    answer = exercise.call(f, raising, {})
    assert answer.status == "raised" and "ValueError" in answer.message
    assert exercise.judge(raising, {}, answer).passed
    assert exercise.call(lambda: 1 / 0, raising, {}).status == "error"


def _modules_in(inputs):
    """Every torch module among a case's inputs, a pipeline's components included."""
    found = []
    for value in inputs.values():
        if isinstance(value, torch.nn.Module):
            found.append(value)
        components = getattr(value, "components", None)
        if isinstance(components, dict):
            found += [c for c in components.values() if isinstance(c, torch.nn.Module)]
    return found


def _cached_pipeline_modules():
    """The modules of the pipeline the oracles of lessons 05 and 06 share, once loaded."""
    if not bundled_tiny_pipeline.cache_info().currsize:
        return []
    return _modules_in({"pipe": bundled_tiny_pipeline()})


ALL_EXERCISES = [e for lesson in lessons() for e in CATALOG.declared(lesson)]
WITH_MODULES = [e for e in ALL_EXERCISES
                if any(_modules_in(c.make_inputs()) for c in e.cases[:1])]


def test_some_exercises_hand_the_learner_modules():
    # the test below must have something to attack: a layer, a U-Net, a pipeline
    assert {e.name for e in WITH_MODULES} >= {"cross_attention", "cfg_sample", "generate",
                                              "img2img"}


@pytest.mark.parametrize("exercise", WITH_MODULES, ids=lambda e: e.name)
def test_a_learner_function_cannot_change_what_the_oracle_computes_with(exercise):
    case = exercise.cases[0]
    inputs = case.make_inputs()
    modules = _modules_in(inputs) + _cached_pipeline_modules()
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]

    def vandal(**arguments):
        with torch.no_grad():
            for module in _modules_in(arguments):
                for p in module.parameters():
                    p.zero_()
        return None

    vandal.__name__ = exercise.function
    answer = exercise.call(vandal, case, inputs)
    # returning None is wrong; what matters is that the vandalism stayed in the learner's copy
    assert answer.status in ("returned", "error"), answer
    for module, saved in zip(modules, before, strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[key]), f"{exercise.name}: {key} was changed"
