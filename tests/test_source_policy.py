"""The grader's source policy: borrowed answers are flagged for review, honest work is not.

Each borrowing case is one a determined learner tried on lesson 01's ``forward_diffusion`` (or
lesson 02's DDPM step): it gives right answers, so only the source can tell. Every solution
notebook and every generated lesson must come out with nothing flagged.
"""

import json

import pytest

from course.checks import exercises_for
from course.grading.source_check import review
from tests.helpers import ROOT

HEADER = ("import functools, sys, torch\n"
          "import course.diffusion as helpers\n"
          "from course.checks import lesson01 as check\n")
ORACLES_01 = next(e for e in exercises_for("01") if e.name == "forward_diffusion").oracles
ORACLES_02 = next(e for e in exercises_for("02") if e.name == "ddpm_step").oracles

BORROWED = {
    "a private helper of the checks, through the lesson's alias":
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return check._shifted(x0, t, betas, noise)",
    "the reference as a default argument":
        "def forward_diffusion(x0, t, betas, noise=None, _f=helpers.forward_diffusion):\n"
        "    return _f(x0, t, betas, noise)",
    "sys.modules":
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return sys.modules['course.diffusion'].forward_diffusion(x0, t, betas, noise)",
    "a callable object":
        "class Impl:\n"
        "    def __call__(self, x0, t, betas, noise=None):\n"
        "        return helpers.forward_diffusion(x0, t, betas, noise)\n"
        "forward_diffusion = Impl()",
    "a partial of the reference, bound to the exercise":
        "forward_diffusion = functools.partial(helpers.forward_diffusion)",
    "a partial of the reference in a variable the exercise calls":
        "impl = functools.partial(helpers.forward_diffusion)\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return impl(x0, t, betas, noise)",
    "a top-level cell that patches Exercise.call":
        "import course.checks.exercise as exercise\n"
        "exercise.Exercise.call = lambda self, fn, case, inputs: None\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0",
    "setattr on a module":
        "setattr(helpers, 'noise_' + 'level', None)\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0",
    "exec at the top level":
        "exec('def forward_diffusion(x0, t, betas, noise=None): return x0')",
    "globals()":
        "globals()['forward_diffusion'] = helpers.forward_diffusion",
    "importlib at the top level":
        "import importlib\n"
        "ref = importlib.import_module('course.diffusion')\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0",
    "a decorator that swaps the function":
        "@lambda f: helpers.forward_diffusion\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0",
    "an import under the exercise's name":
        "from course.diffusion import forward_diffusion",
    "the checks inside the exercise":
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return check.forward_diffusion.__wrapped__(x0, t, betas, noise)",
}


@pytest.mark.parametrize("source", BORROWED.values(), ids=BORROWED.keys())
def test_a_borrowed_answer_is_flagged_with_its_line(source):
    found = review([HEADER, source], "forward_diffusion", ORACLES_01)
    assert found, "nothing flagged"
    assert all(f.cell in (1, 2) and f.line >= 1 for f in found)


def test_any_scheduler_class_is_flagged_in_a_ddpm_step_not_only_the_oracle():
    source = ("from diffusers import DDIMScheduler\n"
              "def ddpm_step(model_output, t, x_t, betas, noise):\n"
              "    s = DDIMScheduler(num_train_timesteps=len(betas))\n"
              "    return s.step(model_output, int(t), x_t).prev_sample")
    found = review([source], "ddpm_step", ORACLES_02)
    assert found and all(f.what.startswith("diffusers.DDIMScheduler") for f in found)
    assert {f.line for f in found} == {3, 4}


HONEST = {
    "seeding and the lesson's own check call":
        "torch.manual_seed(0)\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    a = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)\n"
        "    noise = torch.randn_like(x0) if noise is None else noise\n"
        "    return a.sqrt() * x0 + (1 - a).sqrt() * noise, noise\n"
        "check.forward_diffusion(forward_diffusion)",
    "a partial of the learner's own function":
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0, noise\n"
        "at_zero = functools.partial(forward_diffusion, t=torch.tensor([0]))",
    "the Colab cell's membership test and data made by the course":
        "if 'google.colab' in sys.modules:\n"
        "    pass\n"
        "betas = helpers.make_beta_schedule(1000)\n"
        "@torch.no_grad()\n"
        "def forward_diffusion(x0, t, betas, noise=None):\n"
        "    return x0, noise",
}


@pytest.mark.parametrize("source", HONEST.values(), ids=HONEST.keys())
def test_honest_idioms_are_not_flagged(source):
    assert review([HEADER, source], "forward_diffusion", ORACLES_01) == []


def _code_cells(path):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("folder", ["solutions", "lessons"])
def test_no_course_notebook_is_flagged(folder):
    flagged = {}
    for path in sorted((ROOT / folder).glob("0*.ipynb")):
        try:
            exercises = exercises_for(path.name[:2])
        except KeyError:
            continue
        for exercise in exercises:
            found = review(_code_cells(path), exercise.function, exercise.oracles,
                           may_be_class=exercise.function[:1].isupper())
            if found:
                flagged[f"{path.name}: {exercise.name}"] = [str(f) for f in found]
    assert flagged == {}
