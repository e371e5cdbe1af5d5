"""The grader's half in the kernel (course.grading.kernel_side), called in-process: the grader
sends the kernel only the line that imports it, and what it publishes is the answer as data."""

import ast

import pytest
import torch

from course.checks import Answer, Status, exercises_for
from course.grading import grader, kernel_side
from course.grading.exchange import unpack_value, write_value
from course.grading.kernel_side import ANSWER_MIME
from tests.helpers import forward_diffusion as right_forward_diffusion

EXERCISE = next(e for e in exercises_for("01") if e.name == "forward_diffusion")


def _ask(tmp_path, monkeypatch, namespace, case_index=0, replace=None):
    """Write case ``case_index``'s tensors as the grader does (``replace`` swapped in), call
    answer_case, and return (inputs as written, the published answer as an Answer)."""
    published = []
    monkeypatch.setattr("IPython.display.publish_display_data", published.append)
    inputs = EXERCISE.cases[case_index].make_inputs()
    inputs.update(replace or {})
    stem = tmp_path / f"forward_diffusion-{case_index}"
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    write_value(stem, tensors, {"lesson": "01", "exercise": "forward_diffusion",
                                "case": case_index})
    kernel_side.answer_case(str(stem), namespace)
    (message,) = published
    assert set(message) == {ANSWER_MIME}
    value, document = unpack_value(message[ANSWER_MIME])
    return inputs, Answer(Status(document["status"]), value, document["message"],
                          document["changed"])


def test_the_kernel_is_sent_one_import_line():
    tree = ast.parse(grader._RUNNER)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.ImportFrom)
    namespace = {}
    exec(grader._RUNNER, namespace)  # noqa: S102 - the grader's own constant
    assert namespace["__course_answer_case"] is kernel_side.answer_case


def test_a_right_answer_comes_back_as_data_and_passes(tmp_path, monkeypatch):
    inputs, answer = _ask(tmp_path, monkeypatch, {"forward_diffusion": right_forward_diffusion})
    assert answer.status is Status.RETURNED and answer.changed == []
    assert EXERCISE.judge(EXERCISE.cases[0], inputs, answer).passed


def test_the_graders_tensors_replace_the_kernels_own(tmp_path, monkeypatch):
    def echo(x0, t, betas, noise=None):
        return x0, noise

    x0 = torch.full_like(EXERCISE.cases[0].make_inputs()["x0"], 0.25)
    _, answer = _ask(tmp_path, monkeypatch, {"forward_diffusion": echo}, replace={"x0": x0})
    assert torch.equal(answer.value[0], x0)


@pytest.mark.parametrize("body, status", [
    ("raise NotImplementedError()", Status.NOT_IMPLEMENTED),
    ("return 1 / 0", Status.ERROR),
    ("x0.zero_(); return x0, noise", Status.RETURNED),
])
def test_what_the_function_did_is_said_not_judged(tmp_path, monkeypatch, body, status):
    namespace = {}
    exec(f"def forward_diffusion(x0, t, betas, noise=None):\n    {body}", namespace)  # noqa: S102
    _, answer = _ask(tmp_path, monkeypatch, namespace)
    assert answer.status is status
    if status is Status.RETURNED:
        assert answer.changed == ["x0"]  # judged later, in the grader: changed in place


def test_a_missing_function_is_said_so(tmp_path, monkeypatch):
    _, answer = _ask(tmp_path, monkeypatch, {})
    assert answer.status is Status.MISSING and "no function named" in answer.message
