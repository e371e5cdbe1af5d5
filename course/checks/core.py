"""The machinery behind every exercise check.

An :class:`Exercise` is a list of :class:`Case`\\ s. Running one calls the learner's function on
each case's inputs, under a time limit, and compares what comes back with an oracle from a
reference library (diffusers, transformers, peft or torch; never this package's own code).

Nothing the learner's code does can take the kernel down with it: exceptions, wrong types,
NaNs and endless loops all become a failed case with a message saying what was expected and
what came. The report shows itself as a table in Jupyter and as plain text elsewhere, and
carries a machine-readable copy (mime type :data:`MIME`) for the tests and the grader.
"""

from __future__ import annotations

import contextlib
import copy
import html
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

#: Mime type of the machine-readable copy of a report in notebook outputs.
MIME = "application/vnd.course.check+json"

#: Seconds one case may run before it counts as an endless loop.
DEFAULT_TIME_LIMIT = 10.0


class CheckTimeout(BaseException):
    """Raised inside the learner's code when a case runs out of time.

    A BaseException, so that a learner's ``except Exception:`` cannot swallow it.
    """


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block after ``seconds`` with :class:`CheckTimeout`.

    Uses SIGALRM, which only the main thread of a Unix process can receive; Jupyter runs cells
    there. Elsewhere (Windows, a worker thread) the block runs without a limit.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds is None:
        yield
        return

    def on_alarm(signum, frame):
        raise CheckTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# Comparing results
# --------------------------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a value: a tensor's shape and dtype, or a repr trimmed to fit."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 4:
            return f"tensor({value.tolist()}, dtype={value.dtype})"
        return f"tensor of shape {list(value.shape)}, dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{type(value).__name__} of {len(value)}: ({inner}{more})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_tensor(
    name: str, got: Any, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> str | None:
    """None when ``got`` matches ``expected``; otherwise what differs, in one sentence.

    Checked in the order a learner can act on: type, shape, dtype, finiteness, values.
    """
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a torch.Tensor, got {describe(got)}"
    if got.shape != expected.shape:
        return f"{name}: expected shape {list(expected.shape)}, got {list(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{name}: expected dtype {expected.dtype}, got {got.dtype}"
    finite = torch.isfinite(got)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return f"{name}: {bad} of {got.numel()} values are NaN or inf"
    got_cpu, expected_cpu = got.detach().cpu().double(), expected.detach().cpu().double()
    if not torch.allclose(got_cpu, expected_cpu, atol=atol, rtol=rtol):
        error = (got_cpu - expected_cpu).abs()
        worst = int(error.argmax())
        return (
            f"{name}: values differ, max |got - expected| = {error.max().item():.3g} "
            f"(tolerance {atol:g}); at flat index {worst}: expected "
            f"{expected_cpu.flatten()[worst].item():.6g}, got {got_cpu.flatten()[worst].item():.6g}"
        )
    return None


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: every case draws the same inputs on every run."""
    return torch.Generator().manual_seed(seed)


def clone_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A copy, so the learner's function can neither see nor spoil the oracle's inputs.

    Modules are shared rather than copied: a loss is checked by its gradient with respect to
    the very parameters the learner's code used.
    """

    def copy_of(value):
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, torch.nn.Module):
            return value
        return copy.deepcopy(value)

    return {k: copy_of(v) for k, v in inputs.items()}


# --------------------------------------------------------------------------------------------
# Cases, exercises, results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of the learner's function and what must come back.

    ``make_inputs`` builds the keyword arguments (seeded, so a case is the same every run).
    ``verify(inputs, got)`` returns None when ``got`` is right, else what is wrong; it computes
    the oracle from its own copy of the inputs. A case that expects an exception sets
    ``raises`` instead of ``verify``.
    """

    name: str
    make_inputs: Callable[[], dict[str, Any]]
    verify: Callable[[dict[str, Any], Any], str | None] | None = None
    raises: type[BaseException] | None = None
    hidden: bool = False
    hint: str = ""


@dataclass
class CaseResult:
    name: str
    hidden: bool
    status: str  # "pass", "fail", "error", "timeout", "not implemented", "missing"
    message: str = ""
    hint: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class ExerciseReport:
    exercise: str
    function: str
    points: float
    cases: list[CaseResult] = field(default_factory=list)
    demo: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        if not self.cases:
            return 0.0
        return round(self.points * sum(c.passed for c in self.cases) / len(self.cases), 4)

    def summary(self) -> str:
        n_pass = sum(c.passed for c in self.cases)
        verdict = "PASSED" if self.passed else "NOT YET"
        return f"{self.exercise}: {verdict} ({n_pass}/{len(self.cases)} cases)"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, score=self.score)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExerciseReport:
        cases = [CaseResult(**c) for c in data.get("cases", [])]
        return cls(data["exercise"], data["function"], data["points"], cases,
                   data.get("demo", False))

    def __str__(self) -> str:
        lines = [self.summary()]
        messages = {c.message for c in self.cases}
        if len(self.cases) > 1 and len(messages) == 1 and not any(c.passed for c in self.cases):
            # Every case failed the same way (not implemented, missing): say it once.
            return f"{lines[0]}\n  all {len(self.cases)} cases: {messages.pop()}"
        for case in self.cases:
            mark = "ok  " if case.passed else "FAIL"
            label = f"{case.name} (hidden)" if case.hidden else case.name
            lines.append(f"  [{mark}] {label}")
            if not case.passed:
                lines.extend(f"         {line}" for line in case.message.splitlines())
                if case.hint:
                    lines.append(f"         hint: {case.hint}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#b35900"
        rows = []
        for case in self.cases:
            mark = "&#10004;" if case.passed else "&#10008;"
            detail = "" if case.passed else html.escape(case.message).replace("\n", "<br>")
            if case.hint and not case.passed:
                detail += f"<br><i>hint: {html.escape(case.hint)}</i>"
            rows.append(
                f"<tr><td style='color:{'#1a7f37' if case.passed else '#cf222e'}'>{mark}</td>"
                f"<td style='text-align:left'>{html.escape(case.name)}</td>"
                f"<td style='text-align:left'>{detail}</td></tr>"
            )
        return (
            f"<div class='course-check'><b style='color:{colour}'>"
            f"{html.escape(self.summary())}</b>"
            f"<table style='margin-left:0'>{''.join(rows)}</table></div>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": str(self), "text/html": self._repr_html_(), MIME: self.to_json()}


def _where_it_failed(error: BaseException) -> str:
    """The learner's line that raised, found as the last frame outside this package."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if "/course/" not in f.filename.replace("\\", "/")]
    if not own:
        return ""
    frame = own[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"\n  in {frame.name}, line {frame.lineno}{code}"


@dataclass
class Exercise:
    """A graded exercise: the learner writes ``function``; the cases say what it must do."""

    name: str
    function: str
    cases: list[Case]
    points: float = 1.0
    time_limit: float = DEFAULT_TIME_LIMIT
    demo: bool = False

    def run(self, fn: Any, include_hidden: bool = False) -> ExerciseReport:
        """Run the public cases (and the hidden ones when grading) against ``fn``."""
        report = ExerciseReport(self.name, self.function, self.points, demo=self.demo)
        cases = [c for c in self.cases if include_hidden or not c.hidden]
        problem = _not_learner_code(fn, self.function)
        for case in cases:
            if problem:
                report.cases.append(CaseResult(case.name, case.hidden, "missing", problem))
                continue
            result = self._run_case(fn, case)
            report.cases.append(result)
            if result.status == "timeout":
                # One endless loop is enough to know; do not spend the time limit again.
                problem = "not run: an earlier case did not return in time"
        return report

    def __call__(self, fn: Any) -> None:
        """Check ``fn`` on the public cases and show the verdict (what a lesson cell calls)."""
        report = self.run(fn)
        try:
            from IPython.display import display

            display(report)
        except ImportError:  # plain Python: print the text version
            print(report)

    def _run_case(self, fn: Callable, case: Case) -> CaseResult:
        inputs = case.make_inputs()
        learner_inputs = clone_inputs(inputs)
        start = time.perf_counter()

        def result(status: str, message: str = "") -> CaseResult:
            hint = case.hint if status in ("fail", "error") else ""
            return CaseResult(case.name, case.hidden, status, message, hint,
                              round(time.perf_counter() - start, 4))

        try:
            with time_limit(self.time_limit):
                got = fn(**learner_inputs)
        except CheckTimeout:
            return result("timeout", f"{self.function} did not return within {self.time_limit:g} s"
                          " (an endless loop?)")
        except NotImplementedError:
            return result("not implemented", f"{self.function} is not implemented yet "
                          "(it raised NotImplementedError)")
        except Exception as error:  # the learner's bug, reported instead of propagated
            if case.raises is not None and isinstance(error, case.raises):
                return result("pass")
            return result("error", f"{self.function} raised {type(error).__name__}: {error}"
                          f"{_where_it_failed(error)}")
        if case.raises is not None:
            return result("fail", f"expected {case.raises.__name__} to be raised, but "
                          f"{self.function} returned {describe(got)}")
        changed = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)
                   and not torch.equal(v, learner_inputs[k])]
        if changed:
            return result("fail", f"{self.function} changed its input {', '.join(changed)} in "
                          "place; the caller's tensors must be left as they were")
        try:
            problem = case.verify(inputs, got)
        except Exception as error:  # a malformed answer the comparison could not even read
            problem = (f"could not compare the answer ({type(error).__name__}: {error}); "
                       f"got {describe(got)}")
        return result("fail", problem) if problem else result("pass")


def _not_learner_code(fn: Any, expected_name: str) -> str:
    """Why ``fn`` cannot be checked (empty string when it can)."""
    if fn is None:
        return f"no function named {expected_name} was found: run the cell that defines it"
    if not callable(fn):
        return f"expected a function {expected_name}(...), got {describe(fn)}"
    module = getattr(fn, "__module__", "") or ""
    if module.split(".")[0] in {"course", "diffusers", "transformers", "peft"}:
        return (f"{expected_name} is {module}.{getattr(fn, '__qualname__', fn)}, a library's "
                "implementation, not yours")
    return ""
