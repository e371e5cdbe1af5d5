"""Lesson 07's checks (LoRA): right answers pass every case, each known mistake fails and is
named, broken layers fail with a reason, and answers survive the grader's data path."""

import ast
import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course.checks import (
    Answer,
    Case,
    Exercise,
    Mistake,
    compare_tensor,
    exercises_for,
    find_exercise,
    lesson07,
    lessons,
)
from course.grading.exchange import read_value, write_value
from course.grading.source_check import find_borrowed
from tests.helpers import as_learner

# --------------------------------------------------------------------------------------------
# Right answers, written here: checks refuse the package's own code, and the course's
# course.lora is no oracle (nor a learner's answer).
# --------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """y = base(x) + s * (x @ A.T) @ B.T, with A [r, in] and B [out, r]; base frozen."""

    def __init__(self, base, r, alpha, rslora=False):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / math.sqrt(r) if rslora else alpha / r
        dtype = base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))
        self.merged = False

    def forward(self, x):
        y = self.base(x)
        return y if self.merged else y + self.scale * (x @ self.lora_A.T) @ self.lora_B.T

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.scale * self.lora_B @ self.lora_A
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.scale * self.lora_B @ self.lora_A
            self.merged = False


class LoRAOnACopy(nn.Module):
    """Also right, written differently: a private copy of the base under another name, the
    update as one [out, in] matrix, a flag of its own."""

    def __init__(self, base, r, alpha, rslora=False):
        super().__init__()
        self.frozen = copy.deepcopy(base)
        for p in self.frozen.parameters():
            p.requires_grad = False
        self.scale = alpha / (r ** 0.5 if rslora else r)
        self.lora_A = nn.Parameter(0.01 * torch.randn(r, base.in_features,
                                                      dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype))
        self.folded = False

    def forward(self, x):
        out = torch.nn.functional.linear(x, self.frozen.weight, self.frozen.bias)
        if not self.folded:
            out = out + x @ (self.scale * self.lora_B @ self.lora_A).T
        return out

    def merge(self):
        with torch.no_grad():
            self.frozen.weight.add_(self.scale * self.lora_B @ self.lora_A)
        self.folded = True

    def unmerge(self):
        with torch.no_grad():
            self.frozen.weight.sub_(self.scale * self.lora_B @ self.lora_A)
        self.folded = False


def count_lora_parameters(model, r, target_modules):
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear)
               and any(name == t or name.endswith("." + t) for t in target_modules))


RIGHT = {"lora_forward": LoRALinear, "lora_merge": LoRALinear,
         "count_lora_parameters": count_lora_parameters}


# --------------------------------------------------------------------------------------------
# The exercises as written
# --------------------------------------------------------------------------------------------


def test_the_lesson_is_registered_with_three_exercises():
    assert lessons()["07"] == "course.checks.lesson07"
    assert exercises_for("07") == lesson07.EXERCISES
    assert [e.name for e in lesson07.EXERCISES] == ["lora_forward", "lora_merge",
                                                    "count_lora_parameters"]
    assert [e.points for e in lesson07.EXERCISES] == [3, 2, 2]


@pytest.mark.parametrize("exercise", lesson07.EXERCISES, ids=lambda e: e.name)
def test_every_exercise_has_hidden_cases_mistakes_hints_and_peft_as_oracle(exercise):
    public = [c for c in exercise.cases if not c.hidden]
    hidden = [c for c in exercise.cases if c.hidden]
    assert len(public) == 2
    assert len(hidden) >= (3 if exercise.name == "count_lora_parameters" else 4)
    assert len(exercise.mistakes) >= 5 and len(exercise.hints) == 3
    assert "peft" in exercise.oracles


def test_the_checks_never_use_the_courses_own_lora():
    tree = ast.parse(Path(lesson07.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            assert "lora" not in module, module
            assert all("lora" not in alias.name for alias in node.names if node.level)
        if isinstance(node, ast.Import):
            assert all(not alias.name.startswith("course") for alias in node.names)


@pytest.mark.parametrize("exercise", lesson07.EXERCISES, ids=lambda e: e.name)
def test_a_right_answer_passes_every_case(exercise):
    report = exercise.run(RIGHT[exercise.name], include_hidden=True)
    assert report.passed, str(report)
    assert report.score == exercise.points


@pytest.mark.parametrize("exercise", lesson07.EXERCISES[:2], ids=lambda e: e.name)
def test_a_layer_on_a_copy_of_its_base_under_another_name_passes_too(exercise):
    report = exercise.run(LoRAOnACopy, include_hidden=True)
    assert report.passed, str(report)


# --------------------------------------------------------------------------------------------
# Broken layers: a clear verdict, never an exception out of the check
# --------------------------------------------------------------------------------------------


class TransposedA(LoRALinear):
    def __init__(self, base, r, alpha, rslora=False):
        super().__init__(base, r, alpha, rslora)
        self.lora_A = nn.Parameter(torch.zeros(base.in_features, r, dtype=base.weight.dtype))


class NaNForward(LoRALinear):
    def forward(self, x):
        return super().forward(x) * float("nan")


class RaisingForward(LoRALinear):
    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.lora_A.T) @ lora_b.T  # noqa: F821


class EndlessForward(LoRALinear):
    def forward(self, x):
        while True:
            try:
                pass
            except Exception:  # a catch-all must not swallow the time limit
                pass


class Float32Weights(LoRALinear):
    def __init__(self, base, r, alpha, rslora=False):
        super().__init__(base, r, alpha, rslora)
        self.lora_A = nn.Parameter(self.lora_A.detach().float())
        self.lora_B = nn.Parameter(self.lora_B.detach().float())


class NoMerge(nn.Module):
    def __init__(self, base, r, alpha, rslora=False):
        super().__init__()
        self.inner = LoRALinear(base, r, alpha, rslora)
        self.lora_A, self.lora_B = self.inner.lora_A, self.inner.lora_B

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("exercise", lesson07.EXERCISES[:2], ids=lambda e: e.name)
def test_a_wrongly_shaped_A_is_an_error_naming_both_shapes(exercise):
    report = exercise.run(TransposedA)
    first = report.cases[0]
    assert {c.status for c in report.cases} == {"error"}
    assert "self.lora_A: expected shape [r, in_features] = [4, 16], got [16, 4]" in \
        first.message, first.message


def test_a_nan_output_fails_and_says_so():
    report = lesson07.lora_forward.run(NaNForward)
    assert {c.status for c in report.cases} == {"fail"}
    assert all("NaN or inf" in c.message for c in report.cases), str(report)
    assert not any(c.mistake for c in report.cases)


def test_an_exception_in_forward_is_an_error_naming_the_line():
    report = lesson07.lora_forward.run(RaisingForward)
    first = report.cases[0]
    assert first.status == "error"
    assert "NameError" in first.message and "lora_b" in first.message
    assert "in forward, line" in first.message


def test_an_endless_forward_times_out_once(monkeypatch):
    monkeypatch.setattr(lesson07.lora_forward, "time_limit", 0.5)
    report = lesson07.lora_forward.run(EndlessForward, include_hidden=True)
    statuses = [c.status for c in report.cases]
    assert statuses[0] == "timeout" and set(statuses[1:]) == {"missing"}
    assert "did not return within 0.5 s" in report.cases[0].message


def test_the_wrong_dtype_and_a_missing_merge_are_explained():
    float64 = [c for c in lesson07.lora_forward.run(Float32Weights, include_hidden=True).cases
               if "float64" in c.name]
    assert float64 and float64[0].status == "error"
    assert "base layer's weight is torch.float64" in float64[0].message
    merge = lesson07.lora_merge.run(NoMerge).cases[0]
    assert merge.status == "error" and "has no merge() method" in merge.message
    weight_only = lesson07.lora_forward.run(lambda base, r, alpha, rslora: base.weight)
    assert "must give an nn.Module" in weight_only.cases[0].message


def test_a_count_must_be_a_number():
    def as_text(model, r, target_modules):
        return str(count_lora_parameters(model, r, target_modules))

    first = lesson07.count_lora_parameters.run(as_text).cases[0]
    assert first.status == "fail" and "expected the count as an int" in first.message


# --------------------------------------------------------------------------------------------
# Random state, and the grader's data path
# --------------------------------------------------------------------------------------------


def _states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _greedy(**inputs):
    """A wrong answer that draws from every global generator."""
    torch.randn(3), random.random(), np.random.rand(2)
    return LoRALinear(nn.Linear(3, 3), 1, 1.0)


def test_the_checks_leave_the_global_random_state_alone():
    torch.manual_seed(11)
    for exercise in lesson07.EXERCISES:
        for answer in (RIGHT[exercise.name], _greedy):
            before = _states()
            exercise.run(answer, include_hidden=True)
            after = _states()
            assert torch.equal(before[0], after[0]), exercise.name
            assert before[1] == after[1] and np.array_equal(before[2], after[2])


def _through_the_grader(exercise, index, fn, folder):
    """One case as the grader runs it: tensors out to the kernel, the answer back as data."""
    case = exercise.cases[index]
    grader_inputs = case.make_inputs()
    stem = folder / f"{exercise.name}-{index}"
    write_value(Path(f"{stem}-in"), {k: v for k, v in grader_inputs.items()
                                     if isinstance(v, torch.Tensor)},
                {"lesson": "07", "exercise": exercise.name, "case": index})
    # in the kernel (course.grading.grader._RUNNER)
    sent, _ = read_value(Path(f"{stem}-in"))
    full = case.make_inputs()
    full.update({k: v for k, v in sent.items() if k in full})
    answer = exercise.call(fn, case, full)
    write_value(Path(f"{stem}-out"), answer.value,
                {"status": answer.status, "message": answer.message, "changed": answer.changed})
    # back in the grader
    value, document = read_value(Path(f"{stem}-out"))
    returned = Answer(status=document["status"], value=value, message=document["message"],
                      changed=document["changed"])
    return exercise.judge(case, grader_inputs, returned)


@pytest.mark.parametrize("exercise", lesson07.EXERCISES, ids=lambda e: e.name)
def test_answers_survive_the_graders_data_path(exercise, tmp_path):
    right, wrong = RIGHT[exercise.name], as_learner(exercise.mistakes[0].fn)
    for index in range(len(exercise.cases)):
        result = _through_the_grader(exercise, index, right, tmp_path)
        assert result.passed, (exercise.cases[index].name, result.message)
        result = _through_the_grader(exercise, index, wrong, tmp_path)
        assert result.status == "fail" and result.mistake == exercise.mistakes[0].name, \
            (exercise.cases[index].name, result.message)


# --------------------------------------------------------------------------------------------
# Exercise.arguments: only the named inputs reach the learner's function
# --------------------------------------------------------------------------------------------


def test_arguments_limit_what_the_function_and_the_mistakes_get():
    seen = {}

    def make():
        return {"x": torch.arange(3.0), "probe": torch.ones(3)}

    def capture(inputs, got):
        seen["capture"] = sorted(inputs)
        return got * inputs["probe"]

    def verify(inputs, got):
        seen["verify"] = sorted(inputs)
        return compare_tensor("doubled", got, 2 * inputs["x"])

    exercise = Exercise("toy_arguments", "double", [Case("three", make, verify)],
                        arguments=("x",), capture=capture,
                        mistakes=[Mistake("tripled", lambda x: 3 * x, "three, not two.")])
    assert exercise.run(lambda x: 2 * x).passed
    assert seen == {"capture": ["probe", "x"], "verify": ["probe", "x"]}
    case = exercise.run(lambda x: 3 * x).cases[0]
    assert case.status == "fail" and case.mistake == "tripled"
    # a function that wants an input the exercise keeps back fails with the reason
    refused = exercise.run(lambda x, probe: 2 * x).cases[0]
    assert refused.status == "error" and "probe" in refused.message


def test_the_source_check_flags_a_count_that_borrows_peft():
    cells = ["from peft import LoraConfig, inject_adapter_in_model\n"
             "def count_lora_parameters(model, r, target_modules):\n"
             "    model = inject_adapter_in_model(LoraConfig(r=r, target_modules=target_modules),"
             " model)\n"
             "    return sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n)\n"]
    found = find_borrowed(cells, "count_lora_parameters",
                          lesson07.count_lora_parameters.oracles)
    assert any(f.what.startswith("peft") for f in found)


def test_source_check_follows_a_class_into_its_bases_and_methods():
    from course.grading.source_check import find_borrowed

    cells = ["import math\nfrom torch import nn\nfrom peft.tuners.lora import Linear as Peft",
             "class LoRALinear(Peft):\n    def forward(self, x):\n"
             "        return super().forward(x)",
             "import course.lora as L\n"
             "class Wrapped(nn.Module):\n    def forward(self, x):\n"
             "        return L.LoRALinear(x, 1, 1)(x)",
             "class Honest(nn.Module):\n    def __init__(self, base, r, alpha, rslora=False):\n"
             "        super().__init__()\n        self.scale = alpha / math.sqrt(r)"]
    assert [f.what for f in find_borrowed(cells, "LoRALinear", ("peft",))] == \
        ["peft.tuners.lora.Linear"]
    assert any("course.lora" in f.what for f in find_borrowed(cells, "Wrapped", ("peft",)))
    assert find_borrowed(cells, "Honest", ("peft",)) == []


def test_hint_by_class_starts_with_the_forward_exercise():
    class LoRALinear:  # what a learner's notebook defines
        pass

    assert find_exercise(LoRALinear).name == "lora_forward"
