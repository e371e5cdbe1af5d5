"""The grader: right answers credited, broken and tampering notebooks scored with a reason.

Every notebook here is a learner's lesson-01 submission. One exercise is right (the cosine
schedule) and the other (``forward_diffusion``) is wrong, broken or hostile in its own way:
each test checks that the honest exercise keeps its point, the other gets 0 with a reason, and
the grader itself neither crashes nor lets the notebook reach past its run.
"""

import inspect
import json
import os
import subprocess
import sys
import time
import uuid

import nbformat
import psutil
import pytest

from course.grading import format_table, grade_notebook, lesson_of, results_json
from course.grading.sandbox import Limits
from tests.helpers import ROOT
from tests.test_checks import forward_diffusion as right_forward_diffusion

pytestmark = pytest.mark.notebook  # every test here starts kernels

SOLUTION_01 = ROOT / "solutions" / "01_forward_noising.ipynb"
LESSON_01 = ROOT / "lessons" / "01_forward_noising.ipynb"

COSINE = '''import math, torch
def cosine_beta_schedule(T, s=0.008, max_beta=0.999):
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)])'''

# The right answer the check tests use, as the source a learner would write.
FORWARD = "import torch\n" + inspect.getsource(right_forward_diffusion)


def _notebook(tmp_path, *sources, name="01_submission.ipynb", lesson="01"):
    """A small learner notebook made of the given code cells."""
    nb = nbformat.v4.new_notebook(metadata={"course": {"lesson": lesson}})
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _scores(grade):
    return {t["name"].rsplit(": ", 1)[1]: t["score"] for t in grade.tests}


def _output(grade, exercise):
    return next(t["output"] for t in grade.tests if t["name"].endswith(f": {exercise}"))


def _stray_processes(marker: str) -> list:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


# --------------------------------------------------------------------------------------------
# Honest work and honest accidents
# --------------------------------------------------------------------------------------------


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
    assert "forward_diffusion is not implemented yet" in data["tests"][2]["output"]
    assert data["score"] == 3
    assert run.returncode == 1  # not every exercise passed
    assert "total: 3/6" in run.stdout


def test_missing_function_and_cell_errors_are_explained(tmp_path):
    grade = grade_notebook(_notebook(tmp_path, COSINE, "1 / 0"))
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "no function named forward_diffusion" in _output(grade, "forward_diffusion")
    assert any("code cell 2 raised ZeroDivisionError" in note for note in grade.notes)


def test_hang_in_one_exercise_leaves_the_other_graded(tmp_path):
    path = _notebook(tmp_path, COSINE, "def forward_diffusion(x0, t, betas, noise=None):\n"
                     "    while True:\n        pass")
    grade = grade_notebook(path)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "did not return within" in _output(grade, "forward_diffusion")


def test_a_cell_that_hangs_is_interrupted_and_the_rest_runs(tmp_path):
    path = _notebook(tmp_path, "import time\nwhile True:\n    time.sleep(0.1)", COSINE)
    grade = grade_notebook(path, limits=Limits(cell_timeout=5))
    assert _scores(grade)["cosine_beta_schedule"] == 1
    assert any("code cell 1 did not finish" in note for note in grade.notes), grade.notes


def test_unreadable_and_unknown_notebooks(tmp_path):
    broken = tmp_path / "01_broken.ipynb"
    broken.write_text("{ this is not json")
    grade = grade_notebook(broken)
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 0}
    assert "could not be read" in grade.tests[0]["output"]

    unknown = _notebook(tmp_path, "x = 1", name="notes.ipynb")
    grade = grade_notebook(unknown)
    assert grade.tests == [] and "cannot tell which lesson" in grade.notes[0]
    data = results_json([grade])
    assert data["score"] == 0 and data["tests"] == [] and "cannot tell" in data["output"]
    assert "total: 0/0" in format_table([grade])


def test_the_lesson_is_what_the_instructor_asked_for():
    assert lesson_of("01_forward_noising.ipynb") == "01"
    assert lesson_of("homework.ipynb") is None
    assert lesson_of("homework.ipynb", requested="3") == "03"
    assert lesson_of("01_forward_noising.ipynb", requested="03") == "03"


def test_a_notebook_submitted_under_another_lesson_is_graded_as_that_lesson(tmp_path):
    path = _notebook(tmp_path, COSINE, FORWARD, name="03_ddim_schedulers.ipynb", lesson="01")
    grade = grade_notebook(path)
    assert grade.lesson == "03"
    assert set(_scores(grade)) == {"ddim_step", "sample_with_scheduler"}
    assert grade.score == 0 and not grade.passed
    assert any("metadata says lesson 01" in note for note in grade.notes), grade.notes


def test_a_slow_but_correct_solution_is_not_cut_by_the_cell_limit(tmp_path):
    # Each case takes 1.5 s, all cases together far more than the 3 s cell limit: the grader's
    # calls have limits of their own.
    slow = "import time\n_fast = forward_diffusion\n" \
           "def forward_diffusion(*args, **kwargs):\n    time.sleep(1.5)\n" \
           "    return _fast(*args, **kwargs)"
    grade = grade_notebook(_notebook(tmp_path, COSINE, FORWARD, slow),
                           limits=Limits(cell_timeout=3))
    assert _scores(grade) == {"forward_diffusion": 2, "cosine_beta_schedule": 1}


# --------------------------------------------------------------------------------------------
# Faults that take the kernel down with them
# --------------------------------------------------------------------------------------------


def test_an_exercise_that_kills_the_kernel_costs_only_itself(tmp_path):
    killer = "import os\ndef forward_diffusion(x0, t, betas, noise=None):\n    os._exit(1)"
    grade = grade_notebook(_notebook(tmp_path, COSINE, killer))
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "killed the kernel" in _output(grade, "forward_diffusion")


def test_a_cell_that_kills_the_kernel_is_named_and_skipped(tmp_path):
    grade = grade_notebook(_notebook(tmp_path, COSINE, "import os\nos._exit(3)", FORWARD))
    assert _scores(grade) == {"forward_diffusion": 2, "cosine_beta_schedule": 1}
    assert any("code cell 2 killed the kernel" in note for note in grade.notes), grade.notes


def test_a_loop_that_swallows_every_interrupt_is_stopped(tmp_path):
    stubborn = ("import time\ndef forward_diffusion(x0, t, betas, noise=None):\n"
                "    while True:\n        try:\n            time.sleep(0.05)\n"
                "        except BaseException:\n            pass")
    grade = grade_notebook(_notebook(tmp_path, COSINE, stubborn))
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "hung the kernel" in _output(grade, "forward_diffusion")


def test_system_exit_fails_only_the_case_that_raised_it(tmp_path):
    partial = FORWARD.replace("    t = torch.as_tensor(t)\n",
                              "    if x0.shape[0] == 1:\n        raise SystemExit(0)\n"
                              "    t = torch.as_tensor(t)\n")
    grade = grade_notebook(_notebook(tmp_path, COSINE, partial))
    scores = _scores(grade)
    assert 0 < scores["forward_diffusion"] < 2 and scores["cosine_beta_schedule"] == 1
    output = _output(grade, "forward_diffusion")
    assert "raised SystemExit" in output and "could not run" not in output


def test_a_notebook_that_fills_memory_is_stopped_by_its_limit(tmp_path):
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))"
    grade = grade_notebook(_notebook(tmp_path, COSINE, hog, FORWARD),
                           limits=Limits(memory_mb=3000))
    assert _scores(grade) == {"forward_diffusion": 2, "cosine_beta_schedule": 1}
    assert any("code cell 2 ran out of memory" in note or "code cell 2 killed" in note
               for note in grade.notes), grade.notes


# --------------------------------------------------------------------------------------------
# Tampering
# --------------------------------------------------------------------------------------------


def test_replacing_the_checker_in_the_kernel_earns_nothing(tmp_path):
    # Everything the kernel could patch: the in-kernel check, the call that runs a case, the
    # verdict, and the report. Only forward_diffusion's are forged, so the honest exercise
    # beside it shows that grading went on.
    tamper = ("import course.checks as checks\n"
              "_call = checks.Exercise.call\n"
              "def forged(self, fn, case, inputs):\n"
              "    if self.name != 'forward_diffusion':\n"
              "        return _call(self, fn, case, inputs)\n"
              "    return checks.Answer('pass', 'PASSED')\n"
              "checks.Exercise.call = forged\n"
              "checks.Exercise.judge = lambda *a, **k: checks.CaseResult('x', False, 'pass')\n"
              "checks.ExerciseReport.score = property(lambda self: 1000.0)\n"
              "def forward_diffusion(x0, t, betas, noise=None):\n"
              "    raise NotImplementedError()")
    path = _notebook(tmp_path, COSINE, tamper)
    # The patching is flagged for review: every exercise of the notebook scores 0 ...
    flagged = grade_notebook(path)
    assert _scores(flagged) == {"forward_diffusion": 0, "cosine_beta_schedule": 0}
    assert "flagged for review: monkeypatching (course.checks.Exercise.call)" in \
        _output(flagged, "forward_diffusion")
    # ... and even credited after review, the forged verdict is worth nothing: the grader
    # judges in its own process
    credited = grade_notebook(path, allow_flagged=True)
    assert _scores(credited) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}


def test_forged_answers_are_read_as_data_and_garbage_is_a_reason(tmp_path):
    garbage = ("import course.grading.exchange as ex\n"
               "ex.pack_value = lambda value, extra=None: {'value': {'tensor': 't0'},\n"
               "                                           'tensors': '!not base64!'}\n"
               "def forward_diffusion(x0, t, betas, noise=None):\n    return x0, noise")
    first = _notebook(tmp_path, COSINE, garbage, name="01_garbage.ipynb")
    second = _notebook(tmp_path, COSINE, FORWARD, name="01_honest.ipynb")
    results = tmp_path / "results.json"
    subprocess.run([sys.executable, "-m", "course", "grade", str(first), str(second),
                    "--json", str(results), "--allow-flagged"], capture_output=True, text=True,
                   timeout=600)
    data = json.loads(results.read_text())
    scores = {t["name"].rsplit("/", 1)[1]: t["score"] for t in data["tests"]}
    assert scores == {"01_garbage.ipynb: forward_diffusion": 0,
                      "01_garbage.ipynb: cosine_beta_schedule": 0,
                      "01_honest.ipynb: forward_diffusion": 2,
                      "01_honest.ipynb: cosine_beta_schedule": 1}
    assert "no usable answer came back" in data["tests"][0]["output"]
    assert "flagged for review, credited" in data["tests"][0]["output"]


def test_passing_off_the_reference_scores_zero_whatever_it_is_called(tmp_path):
    wrapper = ("import course.diffusion as helpers\n"
               "_impl = getattr(helpers, 'forward_diffusion')\n"
               "def my_forward(*args, **kwargs):\n    return _impl(*args, **kwargs)\n"
               "def forward_diffusion(x0, t, betas, noise=None):\n"
               "    return my_forward(x0, t, betas, noise)")
    grade = grade_notebook(_notebook(tmp_path, COSINE, wrapper))
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    output = _output(grade, "forward_diffusion")
    assert "course.diffusion.forward_diffusion" in output and "code cell 2" in output


def test_the_kernel_sees_no_grader_secrets_and_cannot_write_to_its_console(tmp_path):
    leak = ("import os\n"
            "os.write(1, b'FORGED total: 99/99\\n'); os.write(2, b'FORGED on stderr\\n')\n"
            "def forward_diffusion(x0, t, betas, noise=None):\n"
            "    raise ValueError('secret=' + os.environ.get('GRADER_SECRET', 'absent') + "
            "' home=' + os.environ.get('HOME', ''))")
    path = _notebook(tmp_path, COSINE, leak)
    env = dict(os.environ, GRADER_SECRET="hunter2")
    run = subprocess.run([sys.executable, "-m", "course", "grade", str(path), "--json",
                          str(tmp_path / "r.json")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert "FORGED" not in run.stdout + run.stderr
    output = json.loads((tmp_path / "r.json").read_text())["tests"][0]["output"]
    assert "secret=absent" in output and "hunter2" not in output
    assert str(tmp_path) not in output.split("home=")[1]  # its own directory, not the grader's


@pytest.mark.parametrize("sandbox", ["on", "off"], ids=["bubblewrap", "subreaper"])
def test_nothing_the_notebook_started_outlives_the_grading(tmp_path, sandbox):
    # "off" takes the path of a grader without bubblewrap: orphans reaped and killed.
    marker = f"course-stray-{uuid.uuid4().hex}"
    results = tmp_path / "results.json"
    # A shell (the kernel may be unable to start Python again), detached from the kernel's
    # session, that tries to forge the results after 2 s and then lingers: a stray to be killed.
    script = f"sleep 2; echo forged > {results}; sleep 300"
    spawn = ("import subprocess\n"
             f"subprocess.Popen(['/bin/sh', '-c', {script!r}, {marker!r}], "
             "start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL)")
    path = _notebook(tmp_path, COSINE, spawn)
    env = dict(os.environ, COURSE_SANDBOX=sandbox)
    subprocess.run([sys.executable, "-m", "course", "grade", str(path), "--json", str(results)],
                   capture_output=True, text=True, timeout=600, env=env)
    written = results.read_text()
    time.sleep(3)
    assert results.read_text() == written  # nothing rewrote it after the grader exited
    data = json.loads(written)
    assert data["tests"][1]["score"] == 1
    assert "code cell 2" not in data["output"]  # the process was started
    assert _stray_processes(marker) == []


def test_a_loss_is_judged_by_its_gradient_across_the_kernel_boundary(tmp_path):
    # A graph cannot leave the kernel: the loss comes back with its gradients as tensors.
    loss = ("import torch\nimport torch.nn.functional as F\n"
            "def ddpm_loss(model, x0, t, noise, betas):\n"
            "    a = torch.cumprod(1 - betas, dim=0)[t].view(-1, 1, 1, 1)\n"
            "    return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)")
    no_grad = loss.replace("    return F.mse_loss", "    with torch.no_grad():\n"
                           "        return F.mse_loss")
    right = grade_notebook(_notebook(tmp_path, loss, name="02_right.ipynb", lesson="02"))
    detached = grade_notebook(_notebook(tmp_path, no_grad, name="02_detached.ipynb", lesson="02"))
    assert _scores(right)["ddpm_loss"] == 1
    assert _scores(detached)["ddpm_loss"] == 0
    assert "the loss has no gradient" in _output(detached, "ddpm_loss")
