"""The grader: full marks for solutions, zero for untouched lessons, and no crash on anything."""

import json
import subprocess
import sys

import nbformat
import pytest

from course.grading import format_table, grade_notebook, lesson_of, results_json
from tests.helpers import ROOT

SOLUTION_01 = ROOT / "solutions" / "01_forward_noising.ipynb"
LESSON_01 = ROOT / "lessons" / "01_forward_noising.ipynb"

COSINE = '''import math, torch
def cosine_beta_schedule(T, s=0.008, max_beta=0.999):
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)])'''


def _notebook(tmp_path, *sources, name="01_submission.ipynb"):
    """A small learner notebook for lesson 01 made of the given code cells."""
    nb = nbformat.v4.new_notebook(metadata={"course": {"lesson": "01"}})
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _scores(grade):
    return {t["name"].rsplit(": ", 1)[1]: t["score"] for t in grade.tests}


@pytest.mark.notebook
def test_cli_gives_the_solution_full_marks_and_the_lesson_zero(tmp_path):
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "course", "grade", str(SOLUTION_01), str(LESSON_01),
                          "--json", str(results)], capture_output=True, text=True, timeout=600)
    data = json.loads(results.read_text())
    scores = {t["name"]: (t["score"], t["max_score"]) for t in data["tests"]}
    assert scores == {
        f"{SOLUTION_01}: forward_diffusion": (2, 2),
        f"{SOLUTION_01}: cosine_beta_schedule": (1, 1),
        f"{LESSON_01}: forward_diffusion": (0, 2),
        f"{LESSON_01}: cosine_beta_schedule": (0, 1),
    }
    lesson_output = data["tests"][2]["output"]
    assert "all 9 cases: forward_diffusion is not implemented yet" in lesson_output
    assert data["score"] == 3
    assert run.returncode == 1  # not every exercise passed
    assert "total: 3/6" in run.stdout


def test_hang_in_one_exercise_leaves_the_other_graded(tmp_path):
    path = _notebook(tmp_path, COSINE, "def forward_diffusion(x0, t, betas, noise=None):\n"
                     "    while True:\n        pass")
    grade = grade_notebook(path)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    hung = grade.tests[0]["output"]
    assert "did not return within" in hung
    assert not grade.passed


def test_missing_function_and_errors_are_explained(tmp_path):
    path = _notebook(tmp_path, COSINE, "1 / 0")
    grade = grade_notebook(path)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "no function named forward_diffusion" in grade.tests[0]["output"]
    assert any("cell 2 raised ZeroDivisionError" in note for note in grade.notes)


def test_a_dead_kernel_scores_zero_with_a_reason(tmp_path):
    path = _notebook(tmp_path, COSINE, "import os\nos._exit(3)")
    grade = grade_notebook(path)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 0}
    assert "not graded" in grade.tests[0]["output"]
    assert any("dead" in note.lower() or "died" in note.lower() for note in grade.notes), \
        grade.notes


def test_a_cell_that_hangs_is_interrupted(tmp_path):
    path = _notebook(tmp_path, COSINE, "import time\nwhile True:\n    time.sleep(0.1)")
    grade = grade_notebook(path, cell_timeout=15)
    assert _scores(grade)["cosine_beta_schedule"] == 1
    assert any("cell 2" in note for note in grade.notes), grade.notes


def test_a_notebook_that_ignores_interrupts_is_stopped(tmp_path):
    stubborn = ("import time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
                "    except KeyboardInterrupt:\n        pass")
    path = _notebook(tmp_path, COSINE, stubborn)
    grade = grade_notebook(path, cell_timeout=5, total_timeout=40)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 0}
    assert any("did not finish within 40 s" in note for note in grade.notes), grade.notes


def test_unreadable_and_unknown_notebooks(tmp_path):
    broken = tmp_path / "01_broken.ipynb"
    broken.write_text("{ this is not json")
    grade = grade_notebook(broken)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 0}
    assert "could not be read" in grade.tests[0]["output"]

    unknown = _notebook(tmp_path, "x = 1", name="notes.ipynb")
    nb = nbformat.read(unknown, as_version=4)
    nb.metadata = {}
    nbformat.write(nb, unknown)
    grade = grade_notebook(unknown)
    assert grade.tests == [] and "no graded exercises" in grade.notes[0]
    data = results_json([grade])
    assert data["score"] == 0 and data["tests"] == [] and "no graded exercises" in data["output"]
    assert "total: 0/0" in format_table([grade])


def test_lesson_of_prefers_metadata():
    nb = nbformat.v4.new_notebook(metadata={"course": {"lesson": "01"}})
    assert lesson_of("anything.ipynb", nb) == "01"
    assert lesson_of("01_forward_noising.ipynb") == "01"
    assert lesson_of("homework.ipynb") is None
