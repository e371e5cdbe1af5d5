"""Every lesson, in JupyterLab and Chromium, the way a learner runs it.

One test per lesson. It opens the lesson with its exercises solved (the solution notebook: the
learner's copy in ``lessons/`` has ``raise NotImplementedError()`` where the answers go, so its
Run All would stop at the first exercise), runs all cells in the learner's default mode (no
``COURSE_FAST``, torch's threads chosen by ``course.threads``), then moves every control of every
course widget in it: each slider, menu and text box to a new value and back. It checks:

- the kernel imported this checkout's ``course`` and ran the default path (``FAST`` is False);
- no output shows a traceback, and no widget is left as "Loading widget..." or as text;
- the notebook shows the course widgets its cells make, and each shows controls this test
  knows how to move (``MOVES``): a new control must be added there, not skipped;
- each move changes the picture, and moving back brings the first picture back.

Each update's latency (from the key or menu event to the new picture, decoded) is printed and
recorded (``record_property``); the goal is 1 s on a 2-core CPU, measured, not asserted. A
screenshot of each widget after each move is kept in ``$COURSE_BROWSER_ARTIFACTS/<lesson>/``, or
in the test's tmp_path.

Slow (a lesson's default run takes from seconds to minutes on a CPU): excluded from ``make test``,
run by ``make test-browser-lessons``. Skips without Chromium and Playwright, unless
``COURSE_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import course
from course.dev import labdriver
from tests.test_browser import require_browser

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))

#: Seconds for "Run All Cells" of one lesson in its default mode, on a CPU that may be busy.
RUN_ALL_TIMEOUT_S = 1200
#: The goal for one update, from the learner's action to the new picture (reported, not asserted).
UPDATE_GOAL_MS = 1000
#: A move changes the picture when at least this share of its pixels changes; moving back
#: restores it when at most this share still differs. Not zero: some pictures print how long
#: they took to draw ("0.31 s"), a few dozen pixels of text.
CHANGED_AT_LEAST = 0.01
RESTORED_AT_MOST = 0.005

#: The modules whose ``..._widget`` functions the lessons call.
VIZ_MODULES = ("course.viz.widgets", "course.viz.attention", "course.viz.guidance",
               "course.viz.latents", "course.viz.img2img", "course.viz.lora", "course.viz.flow")

#: A dropdown's move: the option after the one shown (the first after the last).
NEXT_OPTION = "<next option>"

#: Per widget (CSS class), per control (label): where to move it. A number is typed into a
#: slider's readout, a ``KeyPress`` pressed on its handle (a SelectionSlider ignores typing),
#: a string typed into a text box; ``NEXT_OPTION`` picks another menu entry. Values are the
#: lessons' own, moved far enough to change the picture and no further than a learner's first
#: try (the cost of an update grows with steps).
KeyPress = labdriver.KeyPress
MOVES = {
    "course-forward-noising": {"timestep t": 900, "schedule": NEXT_OPTION},
    "course-trajectory": {"step": 0},
    "course-ddim": {"eta": 1.0, "steps": 10},
    "course-attention": {"token": NEXT_OPTION, "step": 0, "layer": NEXT_OPTION},
    "course-guidance": {"prompt": NEXT_OPTION, "negative": "a red circle on the left",
                        "guidance w": 1.0, "steps": 5, "seed": 7},
    "course-latents": {"source": NEXT_OPTION, "image seed": 5, "timestep t": 500},
    "course-img2img": {"prompt": NEXT_OPTION, "strength": 0.2},
    "course-lora": {"prompt": "a red triangle at the top", "purple": 0.0, "outline": 0.0},
    "course-flow-path": {"sigma": 0.9},
    "course-flow-steps": {"Euler steps": KeyPress("ArrowRight", "8")},
}

#: Appended to the lesson: what the kernel really ran with.
PROBE_MARK = "LESSON-PROBE "
PROBE_CELL = (
    "import json as _json, os as _os\n"
    "import torch as _torch\n"
    "import course as _course\n"
    f"print({PROBE_MARK!r} + _json.dumps({{'course': _course.__file__, 'FAST': FAST,\n"
    "    'COURSE_FAST': _os.environ.get('COURSE_FAST'), 'threads': _torch.get_num_threads()}))"
)


def widget_css_class(function_name: str) -> str:
    """The CSS class of the ``course.viz`` widget ``function_name`` makes."""
    for module_name in VIZ_MODULES:
        function = getattr(importlib.import_module(module_name), function_name, None)
        if function is not None:
            classes = set(re.findall(r'"(course-[a-z0-9-]+)"', inspect.getsource(function)))
            classes.discard("course-picture")
            assert len(classes) == 1, (function_name, classes)
            return classes.pop()
    raise AssertionError(f"{function_name} is not a widget of {', '.join(VIZ_MODULES)}")


def expected_widgets(notebook: nbformat.NotebookNode) -> set[str]:
    """The CSS classes of the course widgets the notebook's code cells call for."""
    names = {match for cell in notebook.cells if cell.cell_type == "code"
             for match in re.findall(r"(?<![\w.])(\w+_widget)\(", cell.source)
             if not re.search(rf"def\s+{match}\(", cell.source)}
    return {widget_css_class(name) for name in names}


def artifacts_dir(lesson: str, tmp_path: Path) -> Path:
    """Where this lesson's screenshots go: under ``$COURSE_BROWSER_ARTIFACTS``, else tmp_path."""
    base = os.environ.get("COURSE_BROWSER_ARTIFACTS")
    folder = Path(base) / lesson if base else tmp_path / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def probed_copy(solution: Path, folder: Path) -> Path:
    """The solution notebook with ``PROBE_CELL`` appended, written into ``folder``."""
    notebook = nbformat.read(solution, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
    path = folder / solution.name
    nbformat.write(notebook, path)
    return path


def read_probe(saved: Path) -> dict:
    """The probe cell's report, from the notebook as JupyterLab saved it after Run All."""
    last = nbformat.read(saved, as_version=4).cells[-1]
    text = "".join(output.get("text", "") for output in last.get("outputs", []))
    assert PROBE_MARK in text, f"the probe cell printed {text!r}"
    return json.loads(text.split(PROBE_MARK, 1)[1].splitlines()[0])


def target(control: labdriver.Control, move) -> float | str | labdriver.KeyPress:
    """The value the ``MOVES`` entry ``move`` sends ``control`` to."""
    if move == NEXT_OPTION:
        assert control.kind == "dropdown" and len(control.options) > 1, control
        return control.options[(control.options.index(control.value) + 1)
                               % len(control.options)]
    return move


def start_of(control: labdriver.Control, move) -> float | str | labdriver.KeyPress:
    """The move that takes ``control`` back to where it started, after ``move``."""
    if isinstance(move, labdriver.KeyPress):
        back = {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[move.key]
        return labdriver.KeyPress(back, control.value)
    if control.kind == "slider":
        number = float(control.value)
        return int(number) if number.is_integer() else number
    return control.value


def move_and_back(page, selector: str, control: labdriver.Control, move, first: bytes,
                  shot: Path) -> dict:
    """Move ``control`` to its ``MOVES`` target and back; what happened to the picture."""
    value = target(control, move)
    forward_ms, moved = labdriver.move_control(page, selector, control, value)
    page.locator(selector).screenshot(path=str(shot))
    back_ms, back = labdriver.move_control(page, selector, control, start_of(control, move))
    return {"control": control.description, "to": str(value), "from": control.value,
            "ms": [round(forward_ms, 1), round(back_ms, 1)],
            "changed": labdriver.picture_difference(first, moved),
            "left_over": labdriver.picture_difference(first, back), "screenshot": shot.name}


def drive_widget(page, selector: str, css_class: str, lesson: str, artifacts: Path) -> list[dict]:
    """Move every control of one widget to its ``MOVES`` target and back, one at a time."""
    controls = labdriver.widget_controls(page, selector)
    planned = MOVES.get(css_class, {})
    shown = [control.description for control in controls]
    assert sorted(shown) == sorted(planned), (
        f"{lesson}: {css_class} shows the controls {shown}, MOVES plans {list(planned)}")
    widget = labdriver.find_widget(page, selector)
    updates = []
    for control in controls:
        first = widget.locator(labdriver.PICTURE_SELECTOR).screenshot()
        name = re.sub(r"\W+", "-", f"{css_class}-{control.description}")
        updates.append(move_and_back(page, selector, control, planned[control.description],
                                     first, artifacts / f"{name}.png"))
    return updates


@pytest.fixture(scope="module")
def learner_lab(tmp_path_factory):
    """One JupyterLab whose kernels run lessons as a learner's do (``labdriver.LEARNER_ENV``)."""
    require_browser()
    root = tmp_path_factory.mktemp("lessons-lab-root")
    with labdriver.jupyter_lab(root, env=labdriver.LEARNER_ENV) as server:
        yield server


def test_moves_cover_the_lessons_widgets():
    """Runs without a browser: every widget a lesson calls for has moves planned, and every
    planned widget still exists in some lesson."""
    called = set().union(*(expected_widgets(nbformat.read(path, as_version=4))
                           for path in SOLUTIONS))
    assert called == set(MOVES)


def collected(*args: str) -> list[str]:
    """The test ids pytest collects here with ``args`` (and the project's own options)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "--co", "-q",
                          "-p", "no:cacheprovider", *args, __file__],
                         cwd=ROOT, capture_output=True, text=True)
    return [line for line in run.stdout.splitlines() if "::" in line]


def test_make_test_leaves_the_lessons_to_their_own_target():
    """A plain pytest run (``make test``) deselects the slow lesson runs; ``make
    test-browser-lessons`` selects exactly them, and CI runs it after ``make test``."""
    lesson_runs = [f"test_lesson_runs_and_its_widgets_answer[{path.stem}]" for path in SOLUTIONS]
    assert not [test for test in collected() if "test_lesson_runs" in test]
    recipe = re.search(r"^test-browser-lessons:.*\n\t(.*)", (ROOT / "Makefile").read_text(),
                       re.MULTILINE).group(1)
    selection = re.search(r' -m "([^"]+)"', recipe).group(1)
    assert [test.split("::")[1] for test in collected("-m", selection)] == lesson_runs
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make test-browser-lessons")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.notebook  # JupyterLab starts a kernel
@pytest.mark.parametrize("solution", SOLUTIONS, ids=[path.stem for path in SOLUTIONS])
def test_lesson_runs_and_its_widgets_answer(solution, learner_lab, tmp_path, record_property):
    lesson = solution.stem
    expected = expected_widgets(nbformat.read(solution, as_version=4))
    artifacts = artifacts_dir(lesson, tmp_path)
    notebook = probed_copy(solution, tmp_path)
    with labdriver.notebook_in_lab(notebook, learner_lab, artifacts,
                                   timeout=RUN_ALL_TIMEOUT_S) as lab:
        probe = read_probe(learner_lab.root_dir / notebook.name)
        record_property("run_all_s", round(lab.run_all_s, 1))
        record_property("kernel", probe)
        print(f"\n{lesson}: Run All {lab.run_all_s:.1f} s (default mode, {probe['threads']} "
              f"torch threads); screenshots in {artifacts}")
        problems = labdriver.wait_for_widgets(lab.page)
        widgets = labdriver.label_course_widgets(lab.page)
        updates = []
        for selector, css_class in widgets:
            updates += [{"widget": css_class, **update} for update in
                        drive_widget(lab.page, selector, css_class, lesson, artifacts)]
        problems += [f"after the moves: {problem}"
                     for problem in labdriver.page_problems(lab.page)]
        log = labdriver.kernel_log(lab.page)  # what widget callbacks printed or raised
        if "Traceback" in log:
            problems.append("the kernel log shows a traceback:\n" + log[-2000:])

    latencies = [ms for update in updates for ms in update["ms"]]
    record_property("updates", updates)
    for update in updates:
        shown = {key: update[key].replace("\xa0", " ") for key in ("from", "to")}  # menus' nbsp
        print(f"  {update['widget']} {update['control']!r}: {shown['from']!r} -> "
              f"{shown['to']!r} {update['ms'][0]:.0f} ms, back {update['ms'][1]:.0f} ms "
              f"(changed {update['changed']:.1%}, left over {update['left_over']:.2%})")
    if latencies:
        slowest = max(updates, key=lambda update: max(update["ms"]))
        record_property("slowest_update_ms", max(latencies))
        print(f"  slowest update {max(latencies):.0f} ms ({slowest['widget']} "
              f"{slowest['control']!r}); goal {UPDATE_GOAL_MS} ms: "
              f"{sum(ms > UPDATE_GOAL_MS for ms in latencies)} of {len(latencies)} over")

    assert Path(probe["course"]).resolve().is_relative_to(Path(course.__file__).parent), probe
    assert probe["FAST"] is False and probe["COURSE_FAST"] is None, probe
    assert not problems, f"{lesson}:\n" + "\n".join(problems)
    assert {css_class for _, css_class in widgets} == expected, (
        f"{lesson} shows the widgets {[c for _, c in widgets]}, its cells make {expected}")
    for update in updates:
        assert update["changed"] >= CHANGED_AT_LEAST, f"{lesson}: the picture stayed: {update}"
        assert update["left_over"] <= RESTORED_AT_MOST, (
            f"{lesson}: moving back did not bring the first picture back: {update}")


def stored_outputs_notebook(path: Path) -> Path:
    """A notebook saved with outputs as IPython makes them: a warning, two tracebacks."""
    cell = nbformat.v4.new_code_cell
    output = nbformat.v4.new_output
    notebook = nbformat.v4.new_notebook(cells=[
        cell("import warnings\nwarnings.warn('careful')", execution_count=1, outputs=[
            output("stream", name="stderr",
                   text="/tmp/x.py:2: UserWarning: careful\n  warnings.warn('careful')\n")]),
        cell("1 / 0", execution_count=2, outputs=[
            output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[
                "\x1b[31m----------------------------------------------------------\x1b[39m",
                "\x1b[31mZeroDivisionError\x1b[39m          Traceback (most recent call last)",
                "Cell In[2], line 1\n----> 1 1 / 0\n",
                "\x1b[31mZeroDivisionError\x1b[39m: division by zero"])]),
        cell("1 +", execution_count=3, outputs=[
            output("error", ename="SyntaxError", evalue="invalid syntax (1, 3)", traceback=[
                "  Cell In[3], line 1\n    1 +\n       ^\n",
                "\x1b[31mSyntaxError\x1b[39m: invalid syntax\n"])]),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)
    return path


@pytest.mark.browser
@pytest.mark.notebook
def test_page_problems_are_tracebacks_not_warnings(tmp_path):
    """What the lesson test calls a traceback: JupyterLab shows errors and warnings alike as
    stderr, so the DOM check must tell them apart by their text."""
    require_browser()
    root = tmp_path / "root"
    root.mkdir()
    path = stored_outputs_notebook(root / "stored.ipynb")
    with labdriver.jupyter_lab(root) as server, labdriver.chromium_page() as page:
        labdriver.open_notebook(page, server, path.name)
        problems = labdriver.page_problems(page)
    assert problems == ["cell 2: traceback: ZeroDivisionError: division by zero",
                        "cell 3: traceback: SyntaxError: invalid syntax"]


@pytest.mark.browser
@pytest.mark.notebook
def test_a_widget_callback_that_raises_is_named(tmp_path):
    """A widget's callback runs outside any cell: when it raises, the picture stays and the
    error is only in the kernel log, which the failure message must quote."""
    require_browser()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipywidgets as widgets\n"
        "import matplotlib.pyplot as plt\n"
        "from course.viz.widgets import picture_widget\n"
        "n = widgets.IntSlider(value=1, min=0, max=5, description='n', continuous_update=False)\n"
        "def draw():\n"
        "    if n.value == 3:\n"
        "        raise ValueError('no picture at 3')\n"
        "    figure, axes = plt.subplots(figsize=(2, 1))\n"
        "    axes.set_title(str(n.value))\n"
        "    return figure\n"
        "picture_widget('course-test', [n], draw)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    path = tmp_path / "raises.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(labdriver.LabDriverError, match="ValueError: no picture at 3"):
        with labdriver.notebook_in_lab(path, artifacts_dir=tmp_path) as lab:
            assert labdriver.page_problems(lab.page) == []
            assert labdriver.set_slider(lab.page, ".course-test", "n", 2)[0] > 0
            labdriver.set_slider(lab.page, ".course-test", "n", 3, timeout=5)
