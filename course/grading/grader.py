"""Grade learners' notebooks: ``python -m course grade NOTEBOOK... [--lesson NN] [--json FILE]``.

The learner's code runs only in a sandboxed kernel (:mod:`course.grading.sandbox`); every
verdict is computed here, in the grader's process, where no learner code ever ran. For each
notebook the grader

1. takes the lesson from ``--lesson`` or the file name (``01_...``), and reports a notebook whose
   metadata names another lesson,
2. reads the notebook's source and flags for review the exercises that reach for the course's
   reference, its checks or the library the check compares with, that are not a plain ``def``,
   or that share the notebook with dynamic code or monkeypatching
   (:mod:`course.grading.source_check`),
3. runs the notebook's code cells one by one in a fresh kernel (FAST mode, a time limit per cell
   and per notebook); a cell that kills or hangs the kernel is noted by number, the kernel is
   restarted and the cells before it replayed, and the run goes on without it,
4. for every case of every exercise (public and hidden): builds the inputs here, hands the
   tensors to the kernel as safetensors in a folder it can only read, asks the kernel to call
   the learner's function on them and to send back what it returned as one message
   (safetensors and JSON: data, never code or pickle), and judges that answer here, against the
   reference libraries. A case that kills or hangs the
   kernel fails with the reason; the kernel is restarted and the other exercises go on.
5. scores each exercise from the grader's own table: points times the share of cases passed,
   zero for a flagged one unless ``--allow-flagged``.

Results (Gradescope's results.json: ``score`` and ``tests`` of ``name``, ``score``,
``max_score``, ``output``) are written once, atomically, after every kernel and every process it
started is gone. Nothing a notebook contains can crash the grader or another notebook's grade.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checks import Answer, CaseResult, Exercise, ExerciseReport, Status, exercises_for
from .exchange import ExchangeError, unpack_value, write_value
from .sandbox import KernelSandbox, Limits
from .source_check import review
from .text import printable

#: Seconds the grader adds to a case's own time limit before it gives up on the kernel.
CASE_MARGIN = 15.0

#: Sent to the kernel once per kernel start: the one function the grader calls
#: (:mod:`course.grading.kernel_side`).
_RUNNER = "from course.grading.kernel_side import answer_case as __course_answer_case"


@dataclass
class NotebookGrade:
    path: str
    lesson: str | None
    tests: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(t["score"] for t in self.tests), 4)

    @property
    def max_score(self) -> float:
        return sum(t["max_score"] for t in self.tests)

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(t["score"] == t["max_score"] for t in self.tests)


def lesson_of(path, requested: str | None = None) -> str | None:
    """The lesson to grade ``path`` as: ``requested`` (``--lesson``), else the ``NN_`` prefix."""
    if requested:
        return str(requested).zfill(2)
    match = re.match(r"(\d\d)_", Path(path).name)
    return match[1] if match else None


# --------------------------------------------------------------------------------------------
# Running the notebook in the sandbox
# --------------------------------------------------------------------------------------------


class NotebookRun:
    """The learner's code cells in one sandboxed kernel, kept alive across crashes.

    ``bad`` holds the cells that killed or hung the kernel: replays leave them out.
    """

    def __init__(self, box: KernelSandbox, cells: list[str], limits: Limits, budget: float):
        self.box, self.cells, self.limits = box, cells, limits
        self.deadline = time.monotonic() + budget
        self.bad: set[int] = set()
        self.ran: list[int] = []  # cells the current kernel has run, in order
        self.notes: list[str] = []
        self.runner_defined = False

    def run_all(self) -> None:
        for number in range(1, len(self.cells) + 1):
            if time.monotonic() > self.deadline:
                self.notes.append(f"the notebook's time budget ran out before code cell {number};"
                                  " later cells were not run")
                return
            self._run_cell(number, record=True)

    def _run_cell(self, number: int, record: bool) -> None:
        timeout = min(self.limits.cell_timeout, max(1.0, self.deadline - time.monotonic()))
        outcome = self.box.execute(self.cells[number - 1], timeout=timeout)
        if outcome.status == Status.ERROR and record:
            self.notes.append(f"code cell {number} raised {outcome.error}")
        if outcome.status in (Status.OK, Status.ERROR):
            self.ran.append(number)
            return
        # Dead, hung, or out of memory: a cell that filled the memory leaves it full, as bad
        # for what follows as a crash.
        self.bad.add(number)
        if record:
            what = {Status.DEAD: "killed the kernel",
                    Status.TIMEOUT: f"did not finish ({outcome.error})",
                    Status.OUT_OF_MEMORY: f"ran out of memory (limit {self.limits.memory_mb} MB)",
                    }[outcome.status]
            self.notes.append(f"code cell {number} {what}; the grader restarted the kernel and "
                              "went on without that cell")
        self.recover()

    def recover(self) -> None:
        """A fresh kernel with the definitions back: replay the cells that ran, minus bad ones."""
        replay = [n for n in self.ran if n not in self.bad]
        self.ran, self.runner_defined = [], False
        try:
            self.box.restart()
        except Exception as error:  # noqa: BLE001 - a kernel that will not start again
            self.notes.append(f"the kernel could not be restarted: {type(error).__name__}")
            return
        for number in replay:
            if time.monotonic() > self.deadline:
                break
            self._run_cell(number, record=False)

    def call(self, stem: str, timeout: float):
        """Ask the kernel to run one case; the sandbox's Outcome."""
        if not self.runner_defined:
            self.box.execute(_RUNNER, timeout=30)
            self.runner_defined = True
        return self.box.execute(f"__course_answer_case({stem!r}, get_ipython().user_ns)",
                                timeout=timeout)


# --------------------------------------------------------------------------------------------
# Grading one exercise
# --------------------------------------------------------------------------------------------


def _grade_exercise(run: NotebookRun, lesson: str, exercise: Exercise,
                    exchange: Path) -> ExerciseReport:
    report = exercise.empty_report()
    stop_reason = ""
    for index, case in enumerate(exercise.cases):
        if stop_reason:
            report.cases.append(CaseResult(case.name, case.hidden, Status.ERROR, stop_reason))
            continue
        inputs = case.make_inputs()
        stem = exchange / f"{exercise.name}-{index}"
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        write_value(stem, tensors, {"lesson": lesson, "exercise": exercise.name, "case": index})
        outcome = run.call(str(stem), timeout=exercise.time_limit + CASE_MARGIN)
        if outcome.status in (Status.DEAD, Status.TIMEOUT):
            what = "killed the kernel" if outcome.status == Status.DEAD else \
                f"hung the kernel ({outcome.error})"
            stop_reason = (f"not run: {exercise.function} {what} on an earlier case; the "
                           "grader restarted the kernel")
            report.cases.append(CaseResult(case.name, case.hidden, Status.ERROR,
                                           f"{exercise.function} {what} on this case"))
            run.recover()
            continue
        if outcome.status != Status.OK or outcome.answer is None:
            # the call itself failed (the learner's own exceptions are answers): no answer
            # is read, whatever the kernel published
            why = outcome.error or "the kernel sent none"
            report.cases.append(CaseResult(case.name, case.hidden, Status.ERROR,
                                           f"no usable answer came back: {why}"))
            continue
        try:
            value, document = unpack_value(outcome.answer)
            answer = Answer(status=printable(document.get("status", ""), 20), value=value,
                            message=printable(document.get("message", "")),
                            changed=[printable(c, 100) for c in
                                     list(document.get("changed", []))[:20]])
        except (ExchangeError, TypeError) as error:
            report.cases.append(CaseResult(case.name, case.hidden, Status.ERROR,
                                           f"no usable answer came back: {error}"))
            continue
        result = exercise.judge(case, inputs, answer)
        report.cases.append(result)
        if result.status == Status.TIMEOUT:  # one endless loop is enough to know
            stop_reason = "not run: an earlier case did not return in time"
    return report


def _test(path: Path, exercise: Exercise, report: ExerciseReport | None, reason: str,
          flagged: list, allow_flagged: bool = False) -> dict:
    name = f"{path}: {exercise.name}"
    if report is None:
        return {"name": name, "score": 0.0, "max_score": exercise.points,
                "output": f"not graded: {reason}"}
    score = min(max(report.score, 0.0), exercise.points)
    output = str(report)
    if flagged:
        lines = "; ".join(str(f) for f in flagged[:4])
        more = f" (and {len(flagged) - 4} more)" if len(flagged) > 4 else ""
        if allow_flagged:
            output = f"flagged for review, credited (--allow-flagged): {lines}{more}\n{output}"
        else:
            score = 0.0
            output = (f"flagged for review: {lines}{more}. {exercise.function} is scored 0 "
                      "until an instructor has looked: an exercise must be your own code, with "
                      f"no course reference, checker or dynamic code in the notebook\n{output}")
    return {"name": name, "score": score, "max_score": exercise.points, "output": output}


# --------------------------------------------------------------------------------------------
# Grading a notebook
# --------------------------------------------------------------------------------------------


def _read_cells(path: Path) -> tuple[list[str], str | None]:
    """The notebook's code cells and the lesson its metadata names; ValueError if unreadable."""
    import nbformat

    try:
        if path.stat().st_size > 64 * 1024 * 1024:
            raise ValueError("the file is larger than 64 MB")
        notebook = nbformat.read(path, as_version=4)
        cells = [str(c.source) for c in notebook.cells if c.get("cell_type") == "code"]
        meta = notebook.metadata.get("course", {})
        claimed = meta.get("lesson") if isinstance(meta, dict) else None
        return cells, (str(claimed) if claimed is not None else None)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - any malformed file
        raise ValueError(f"{type(error).__name__}: {str(error)[:200]}") from None


def grade_notebook(path, lesson: str | None = None, limits: Limits | None = None,
                   total_timeout: float = 900, fast: bool = True,
                   allow_flagged: bool = False) -> NotebookGrade:
    """Execute and grade one notebook; never raises for anything the notebook contains."""
    started = time.monotonic()
    limits = limits or Limits()
    path = Path(path)
    grade = NotebookGrade(str(path), lesson_of(path, lesson))
    if grade.lesson is None:
        grade.notes.append(f"cannot tell which lesson {path.name} is: name it NN_... as the "
                           "lesson is named, or pass --lesson NN")
        return grade
    try:
        exercises = exercises_for(grade.lesson)
    except KeyError:
        exercises = []
    if not exercises:
        grade.notes.append(f"no graded exercises for lesson {grade.lesson!r} ({path.name})")
        return grade
    try:
        cells, claimed = _read_cells(path)
    except (ValueError, OSError) as error:
        reason = f"the notebook could not be read: {error}"
        grade.notes.append(reason)
        grade.tests = [_test(path, e, None, reason, []) for e in exercises]
        return grade
    if claimed is not None and claimed.zfill(2) != grade.lesson:
        grade.notes.append(f"the notebook's metadata says lesson {claimed}, but it was graded as "
                           f"lesson {grade.lesson}, as asked")

    env = {"COURSE_FAST": "1" if fast else "0", "OMP_NUM_THREADS": "1"}
    reports: dict[str, ExerciseReport] = {}
    try:
        with KernelSandbox(limits, env=env) as box:
            run = NotebookRun(box, cells, limits, budget=total_timeout)
            run.run_all()
            for exercise in exercises:
                reports[exercise.name] = _grade_exercise(run, grade.lesson, exercise,
                                                         box.inputs)
            grade.notes += box.notes + run.notes
    except Exception as error:  # noqa: BLE001 - the sandbox itself failed; grade what we have
        grade.notes.append(f"the notebook's kernel failed: {type(error).__name__}: "
                           f"{str(error)[:200]}")
    reason = "; ".join(grade.notes) or "the kernel did not start"
    for exercise in exercises:
        flagged = review(cells, exercise.function, exercise.oracles,
                         may_be_class=exercise.function[:1].isupper())
        grade.tests.append(_test(path, exercise, reports.get(exercise.name), reason, flagged,
                                 allow_flagged))
    grade.seconds = round(time.monotonic() - started, 1)
    return grade


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def results_json(grades: list[NotebookGrade]) -> dict:
    """Gradescope's results.json: a total ``score``, the ``tests``, and notes as ``output``."""
    notes = [printable(f"{g.path}: {note}") for g in grades for note in g.notes]
    tests = [{**t, "name": printable(t["name"], 500),
              "output": printable(t["output"], 20_000, keep_newlines=True)}
             for g in grades for t in g.tests]
    return {"score": round(sum(g.score for g in grades), 4), "tests": tests,
            "output": "\n".join(notes)}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: whole or not at all."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def format_table(grades: list[NotebookGrade]) -> str:
    rows = [("notebook", "exercise", "score", "verdict")]
    for grade in grades:
        for test in grade.tests:
            exercise = test["name"].rsplit(": ", 1)[1]
            verdict = "passed" if test["score"] == test["max_score"] else \
                test["output"].splitlines()[0][:70]
            rows.append((printable(grade.path, 200), printable(exercise, 100),
                         f"{test['score']:g}/{test['max_score']:g}", printable(verdict)))
        if not grade.tests:
            rows.append((printable(grade.path, 200), "-", "-",
                         printable(grade.notes[0]) if grade.notes else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    total = sum(g.score for g in grades)
    maximum = sum(g.max_score for g in grades)
    lines.append(f"total: {total:g}/{maximum:g}")
    for grade in grades:
        for note in grade.notes:
            lines.append(printable(f"note ({grade.path}): {note}"))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m course grade``."""
    parser.add_argument("notebooks", nargs="+", help="notebooks to grade")
    parser.add_argument("--lesson", help="grade every notebook as this lesson (e.g. 01); "
                        "default: the NN_ prefix of each file name")
    parser.add_argument("--json", dest="json_path", help="write Gradescope results.json here")
    parser.add_argument("--cell-timeout", type=float, default=120, help="seconds per cell")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds for all cells of one notebook")
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb,
                        help="address-space limit of a notebook's kernel")
    parser.add_argument("--cpu-seconds", type=int, default=Limits.cpu_seconds,
                        help="CPU-time limit of a notebook's kernel")
    parser.add_argument("--file-mb", type=int, default=Limits.file_mb,
                        help="size of the kernel's private /tmp (all its files together)")
    parser.add_argument("--full", action="store_true", help="run lessons in full mode, not FAST")
    parser.add_argument("--allow-flagged", action="store_true",
                        help="credit exercises flagged for review (after an instructor looked)")


def run(args: argparse.Namespace) -> int:
    """Grade ``args.notebooks``; 0 when every one passed."""
    limits = Limits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds,
                    file_mb=args.file_mb, cell_timeout=args.cell_timeout)
    grades = [grade_notebook(p, lesson=args.lesson, limits=limits, total_timeout=args.timeout,
                             fast=not args.full, allow_flagged=args.allow_flagged)
              for p in args.notebooks]
    print(format_table(grades))
    if args.json_path:
        write_atomically(Path(args.json_path), json.dumps(results_json(grades), indent=2) + "\n")
    return 0 if grades and all(g.passed for g in grades) else 1
