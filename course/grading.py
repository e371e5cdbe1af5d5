"""Grade learners' notebooks: ``python -m course grade NOTEBOOK... [--json results.json]``.

For each notebook the grader

1. works out the lesson (notebook metadata ``course.lesson``, else the ``NN_`` file-name prefix),
2. appends one cell that runs every exercise of that lesson, public and hidden cases, against the
   functions the notebook defined, writing results to a file as each exercise finishes,
3. executes the notebook in a fresh kernel (FAST mode, errors allowed, a time limit per cell)
   inside a child process that is killed if the whole notebook overruns its time budget,
4. scores each exercise by the share of its cases passed, and explains every zero.

The result is Gradescope's results.json format: ``score`` and ``tests`` of ``name``, ``score``,
``max_score``, ``output``. Nothing a notebook contains can crash the grader: an unreadable file,
a missing function, an exception, a dead kernel or an endless loop costs points, not the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .checks import ExerciseReport, exercises_for
from .checks.core import CaseResult
from .device import FAST_ENV_VAR

RESULTS_ENV_VAR = "COURSE_GRADE_RESULTS"
_GRADE_CELL = (
    "# Added by the grader: run every exercise with its hidden cases.\n"
    "import course.grading as _course_grading\n"
    "_course_grading.grade_in_kernel({lesson!r}, globals())"
)


# --------------------------------------------------------------------------------------------
# Inside the learner's kernel
# --------------------------------------------------------------------------------------------


def grade_in_kernel(lesson: str, namespace: dict) -> None:
    """Run all cases of a lesson's exercises on the functions in ``namespace``.

    Results go to the file named by ``$COURSE_GRADE_RESULTS`` after each exercise, so that what
    was graded survives even if a later exercise hangs past the notebook's time budget.
    """
    results_path = os.environ.get(RESULTS_ENV_VAR)
    reports = []
    for exercise in exercises_for(lesson):
        try:
            report = exercise.run(namespace.get(exercise.function), include_hidden=True)
        except BaseException as error:  # noqa: BLE001 - a broken check must not hide the others
            report = ExerciseReport(exercise.name, exercise.function, exercise.points, [
                CaseResult("all cases", False, "error",
                           f"the check could not run: {type(error).__name__}: {error}")])
        reports.append(report.to_json())
        print(report.summary(), flush=True)
        if results_path:
            tmp = f"{results_path}.tmp"
            Path(tmp).write_text(json.dumps(reports), encoding="utf-8")
            os.replace(tmp, results_path)


# --------------------------------------------------------------------------------------------
# In the child process: execute one prepared notebook
# --------------------------------------------------------------------------------------------


def _execute(prepared: str, executed: str, cell_timeout: int, kernel_name: str, cwd: str) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(prepared, as_version=4)
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name=kernel_name,
                            allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": cwd}})
    try:
        client.execute()
    except Exception as error:  # noqa: BLE001 - recorded for the report, e.g. a dead kernel
        notebook.metadata["course_grading_error"] = f"{type(error).__name__}: {error}"[:500]
    nbformat.write(notebook, executed)


# --------------------------------------------------------------------------------------------
# In the grader
# --------------------------------------------------------------------------------------------


@dataclass
class NotebookGrade:
    path: str
    lesson: str | None
    tests: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(t["score"] for t in self.tests), 4)

    @property
    def max_score(self) -> float:
        return sum(t["max_score"] for t in self.tests)

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(t["score"] == t["max_score"] for t in self.tests)


def lesson_of(path: Path, notebook=None) -> str | None:
    """The lesson id ("01") from the notebook's metadata, else from its file name."""
    if notebook is not None:
        lesson = notebook.metadata.get("course", {}).get("lesson")
        if lesson:
            return str(lesson)
    match = re.match(r"(\d\d)_", Path(path).name)
    return match[1] if match else None


def _cell_errors(executed) -> list[str]:
    """One line per cell that ended in an error (cell numbers count from 1, as Jupyter shows)."""
    lines = []
    for number, cell in enumerate(executed.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = str(output.get("evalue", ""))[:200]
                lines.append(f"cell {number} raised {output.get('ename')}: {value}")
    return lines


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the executor and its kernel (which jupyter starts in a session of its own)."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the process already gone
        children = []
    for child in children:
        try:
            child.kill()
        except Exception:  # noqa: BLE001
            pass
    process.kill()
    process.wait()


def grade_notebook(path, cell_timeout: int = 120, total_timeout: int = 900,
                   kernel_name: str = "python3", fast: bool = True) -> NotebookGrade:
    """Execute and grade one notebook; never raises for anything the notebook contains."""
    path = Path(path)
    grade = NotebookGrade(str(path), lesson_of(path))
    try:
        notebook = nbformat.read(path, as_version=4)
        grade.lesson = lesson_of(path, notebook)
    except Exception as error:  # noqa: BLE001
        notebook = None
        grade.notes.append(f"the notebook could not be read: {type(error).__name__}: {error}")
    try:
        exercises = exercises_for(grade.lesson) if grade.lesson else []
    except KeyError:
        exercises = []
    if not exercises:
        grade.notes.append(f"no graded exercises for lesson {grade.lesson!r} ({path.name})")
        return grade
    if notebook is None:
        for exercise in exercises:
            grade.tests.append(_test(path, exercise, None, grade.notes[0]))
        return grade

    notebook.cells.append(nbformat.v4.new_code_cell(_GRADE_CELL.format(lesson=grade.lesson)))
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        prepared, executed = Path(tmp, "prepared.ipynb"), Path(tmp, "executed.ipynb")
        results = Path(tmp, "results.json")
        nbformat.write(notebook, prepared)
        env = dict(os.environ, **{RESULTS_ENV_VAR: str(results), "HF_HUB_OFFLINE": "1"})
        if fast:
            env[FAST_ENV_VAR] = "1"
        command = [sys.executable, "-m", "course.grading", "--execute", str(prepared),
                   str(executed), str(cell_timeout), kernel_name, str(path.parent.resolve())]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = process.communicate(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            stderr = ""
            grade.notes.append(f"the notebook did not finish within {total_timeout} s and was "
                               "stopped; exercises graded before that keep their score")
        if executed.exists():
            ran = nbformat.read(executed, as_version=4)
            grade.notes += _cell_errors(ran)
            if "course_grading_error" in ran.metadata:
                grade.notes.append(f"execution stopped: {ran.metadata['course_grading_error']}")
        elif process.returncode not in (None, 0) and stderr:
            grade.notes.append(f"the notebook could not be executed: {stderr.strip()[-300:]}")
        graded = json.loads(results.read_text()) if results.exists() else []
    by_name = {r["exercise"]: ExerciseReport.from_json(r) for r in graded}
    reason = "; ".join(grade.notes) or "the grading cell did not run"
    for exercise in exercises:
        grade.tests.append(_test(path, exercise, by_name.get(exercise.name), reason))
    return grade


def _test(path: Path, exercise, report: ExerciseReport | None, reason: str) -> dict:
    name = f"{path}: {exercise.name}"
    if report is None:
        return {"name": name, "score": 0.0, "max_score": exercise.points,
                "output": f"not graded: {reason}"}
    return {"name": name, "score": report.score, "max_score": exercise.points,
            "output": str(report)}


def results_json(grades: list[NotebookGrade]) -> dict:
    """Gradescope's results.json: a total ``score``, the ``tests``, and notes as ``output``."""
    notes = [f"{g.path}: {note}" for g in grades for note in g.notes]
    return {
        "score": round(sum(g.score for g in grades), 4),
        "tests": [t for g in grades for t in g.tests],
        "output": "\n".join(notes),
    }


def format_table(grades: list[NotebookGrade]) -> str:
    rows = [("notebook", "exercise", "score", "verdict")]
    for grade in grades:
        for test in grade.tests:
            exercise = test["name"].rsplit(": ", 1)[1]
            verdict = "passed" if test["score"] == test["max_score"] else \
                test["output"].splitlines()[0][:60]
            rows.append((grade.path, exercise,
                         f"{test['score']:g}/{test['max_score']:g}", verdict))
        if not grade.tests:
            rows.append((grade.path, "-", "-", grade.notes[0] if grade.notes else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    total = sum(g.score for g in grades)
    maximum = sum(g.max_score for g in grades)
    lines.append(f"total: {total:g}/{maximum:g}")
    for grade in grades:
        for note in grade.notes:
            lines.append(f"note ({grade.path}): {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course grade",
                                     description="Execute and grade lesson notebooks.")
    parser.add_argument("notebooks", nargs="+", help="notebooks to grade")
    parser.add_argument("--json", dest="json_path", help="write Gradescope results.json here")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook")
    parser.add_argument("--full", action="store_true", help="run lessons in full mode, not FAST")
    args = parser.parse_args(argv)
    grades = [grade_notebook(p, cell_timeout=args.cell_timeout, total_timeout=args.timeout,
                             fast=not args.full) for p in args.notebooks]
    print(format_table(grades))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results_json(grades), indent=2) + "\n")
    return 0 if grades and all(g.passed for g in grades) else 1


if __name__ == "__main__" and sys.argv[1:2] == ["--execute"]:
    _prepared, _executed, _timeout, _kernel, _cwd = sys.argv[2:7]
    _execute(_prepared, _executed, int(_timeout), _kernel, _cwd)
