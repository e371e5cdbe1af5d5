"""The machinery behind every exercise check.

An :class:`Exercise` is a list of :class:`Case`\\ s. Running one calls the learner's function on
each case's inputs, under a time limit, and compares what comes back with an oracle from a
reference library (diffusers, transformers, peft or torch; never this package's own code).

Nothing the learner's code does can take the kernel down with it: exceptions, wrong types,
NaNs and endless loops all become a failed case with a message saying what was expected and
what came. The report shows itself as a table in Jupyter and as plain text elsewhere, and
carries a machine-readable copy (mime type :data:`MIME`) for the tests and the grader.

Checks teach in tiers. A failed case first names the symptom (what differs, and at which index).
If the learner's answer equals the answer of one of the exercise's known :class:`Mistake`\\ s, the
report names that mistake too. Hints are given only on request: ``check.hint("name")`` shows the
next of the exercise's ``hints``, gentle first, the solution line last.

A check leaves the learner's global random state (torch, Python's ``random``, NumPy) exactly as
it found it, however many random numbers the cases, the oracles or the learner's code draw.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import html
import math
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

#: Mime type of the machine-readable copy of a report in notebook outputs.
MIME = "application/vnd.course.check+json"

#: Seconds one case may run before it counts as an endless loop.
DEFAULT_TIME_LIMIT = 10.0

#: How close the learner's answer must be to a known mistake's answer to be called that mistake.
MISTAKE_ATOL, MISTAKE_RTOL = 1e-4, 1e-3

#: The torch seed the learner's function (and every known mistake) starts from in each case, so a
#: verdict on code that draws random numbers is the same on every run, and a mistake that draws
#: them draws the very same ones. Set inside :func:`preserved_rng`, so the learner never sees it.
CASE_SEED = 1234

#: Every exercise by name, filled as exercises are defined; :func:`hint` looks names up here.
EXERCISES: dict[str, Exercise] = {}

# How many hints of each exercise (by name) the learner has seen so far.
_HINTS_SHOWN: dict[str, int] = {}


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


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block, then put every global random state back as it was.

    Covers torch's CPU generator, CUDA's when CUDA is already in use (asking an unused CUDA for
    its state would start it), MPS's, Python's ``random`` and NumPy's legacy global state when
    NumPy is loaded. A learner who seeds once and then runs a check gets the same numbers
    afterwards as without the check.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    mps_state = _mps_rng_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if not cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
            # CUDA started inside the block: rewind its generators to where they began.
            for generator in torch.cuda.default_generators:
                generator.manual_seed(generator.initial_seed())
        random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)


def _seed_case() -> None:
    """Seed the generators :func:`preserved_rng` restores, and only those.

    Not ``torch.manual_seed``: before CUDA starts, that queues a seeding of CUDA's generator for
    when it does, which would outlive the check.
    """
    torch.default_generator.manual_seed(CASE_SEED)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(CASE_SEED)


def _mps_rng_state() -> torch.Tensor | None:
    """The MPS generator's state on Apple GPUs, else None."""
    try:
        if torch.backends.mps.is_available():
            return torch.mps.get_rng_state()
    except Exception:  # noqa: BLE001 - an MPS build without RNG access: nothing to keep
        pass
    return None


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


def index_text(flat: int, shape: torch.Size | tuple[int, ...]) -> str:
    """A flat position as the index a learner would type: "(b=0, c=2, h=5, w=7)" or "(1, 3)".

    Images are [B, C, H, W] throughout the course, so a 4-D index names its axes.
    """
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape))]
    if len(index) == 4:
        return "(" + ", ".join(f"{axis}={i}" for axis, i in zip("bchw", index)) + ")"
    return "(" + ", ".join(map(str, index)) + ")"


def compare_tensor(
    name: str, got: Any, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> str | None:
    """None when ``got`` matches ``expected``; otherwise what differs and where, in one sentence.

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
        first = int((~finite).flatten().nonzero()[0])
        where = f", the first at index {index_text(first, got.shape)}" if got.ndim else ""
        return f"{name}: {bad} of {got.numel()} values are NaN or inf{where}"
    got_cpu, expected_cpu = got.detach().cpu().double(), expected.detach().cpu().double()
    if not torch.allclose(got_cpu, expected_cpu, atol=atol, rtol=rtol):
        error = (got_cpu - expected_cpu).abs()
        wrong = int((error > atol + rtol * expected_cpu.abs()).sum())
        worst = int(error.argmax())
        where = f"at index {index_text(worst, got.shape)}" if got.ndim else "the value"
        return (
            f"{name}: values differ in {wrong} of {got.numel()} entries, max |got - expected| = "
            f"{error.max().item():.3g} (tolerance {atol:g}); {where}: expected "
            f"{expected_cpu.flatten()[worst].item():.6g}, got {got_cpu.flatten()[worst].item():.6g}"
        )
    return None


def same_answer(got: Any, other: Any, atol: float = MISTAKE_ATOL,
                rtol: float = MISTAKE_RTOL) -> bool:
    """Whether two answers agree: tensors (same shape and dtype, close values), numbers, None,
    or tuples/lists of these, element by element. Anything else never agrees."""
    if isinstance(got, torch.Tensor) and isinstance(other, torch.Tensor):
        return _same_tensor(got, other, atol, rtol)
    if isinstance(got, (tuple, list)) and isinstance(other, (tuple, list)):
        return len(got) == len(other) and all(
            same_answer(a, b, atol, rtol) for a, b in zip(got, other))
    if isinstance(got, dict) and isinstance(other, dict):
        return got.keys() == other.keys() and all(
            same_answer(got[k], other[k], atol, rtol) for k in got)
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(other, numbers):
        return math.isclose(got, other, rel_tol=rtol, abs_tol=atol)
    return got is None and other is None


def _same_tensor(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    if not (a.is_floating_point() or a.is_complex()):
        return torch.equal(a, b)
    # NaN never agrees: a broken answer is not evidence of a particular mistake.
    return bool(torch.allclose(a.to(torch.complex128 if a.is_complex() else torch.float64),
                               b.to(torch.complex128 if b.is_complex() else torch.float64),
                               atol=atol, rtol=rtol))


def _distance(got: Any, other: Any) -> float:
    """The largest absolute difference between two answers that :func:`same_answer` accepts."""
    if isinstance(got, torch.Tensor):
        if got.numel() == 0:
            return 0.0
        diff = got.detach().cpu().to(torch.float64) - other.detach().cpu().to(torch.float64)
        return float(diff.abs().max())
    if isinstance(got, (tuple, list)):
        return max((_distance(a, b) for a, b in zip(got, other)), default=0.0)
    if isinstance(got, dict):
        return max((_distance(got[k], other[k]) for k in got), default=0.0)
    if isinstance(got, (int, float)):
        return abs(float(got) - float(other))
    return 0.0


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: every case draws the same inputs on every run."""
    return torch.Generator().manual_seed(seed)


def diffusers_quiet() -> contextlib.AbstractContextManager[None]:
    """Silence diffusers' warnings and notices while a check builds an oracle or replays a known
    mistake: they must not print into the learner's lesson."""
    from ..logs import only_errors

    return only_errors("diffusers")


@functools.lru_cache(maxsize=1)
def bundled_tiny_pipeline():
    """The bundled tiny StableDiffusionPipeline on the CPU in float32, loaded once per process.

    Checks that need it as an oracle copy it (or swap only its scheduler) before use."""
    from ..models import load_pipeline

    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clone_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A deep copy, so the learner's function can neither see nor spoil the oracle's inputs.

    Modules are copied too: a function that changes a layer's weights (or a pipeline's U-Net)
    changes its own copy, never what the oracle computes with. Objects shared between inputs
    stay shared in the copy (one memo). A loss is still checked by its gradients: ``capture``
    takes them in the learner's copy, whose parameters hold the same values.
    """
    memo: dict[int, Any] = {}

    def copy_of(value):
        if isinstance(value, torch.Tensor) and not value.is_leaf:
            return value.detach().clone()  # deepcopy refuses a tensor that carries a graph
        return copy.deepcopy(value, memo)

    return {k: copy_of(v) for k, v in inputs.items()}


# --------------------------------------------------------------------------------------------
# Cases, mistakes, exercises, results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of the learner's function and what must come back.

    ``make_inputs`` builds the keyword arguments (seeded, so a case is the same every run).
    ``verify(inputs, got)`` returns None when ``got`` is right, else what is wrong; it computes
    the oracle from its own copy of the inputs. A case that expects an exception sets
    ``raises`` instead of ``verify``. ``hint`` is kept for older checks: it is not shown in
    reports, only by :func:`hint` when the exercise has no ``hints`` of its own.
    """

    name: str
    make_inputs: Callable[[], dict[str, Any]]
    verify: Callable[[dict[str, Any], Any], str | None] | None = None
    raises: type[BaseException] | None = None
    hidden: bool = False
    hint: str = ""


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer, so a check can say which slip the learner most likely made.

    ``fn`` takes the same arguments as the learner's function and returns what that mistake
    returns (say, ``alpha_bar * x0`` without the square root). ``explanation`` says what the
    mistake is in one sentence, without giving away the solution line.
    """

    name: str
    fn: Callable[..., Any]
    explanation: str


@dataclass
class Answer:
    """What the learner's function did on one case, before any verdict.

    ``status``: "returned" (``value`` holds the result), "raised" (the exception the case
    expects), "error", "timeout", "not implemented" or "missing"; ``message`` says what
    happened; ``changed`` names the tensor inputs the function modified in place.
    """

    status: str
    value: Any = None
    message: str = ""
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0


#: What :meth:`Exercise.call` can say of a case; anything else is not an answer.
ANSWER_STATUSES = ("returned", "raised", "error", "timeout", "not implemented", "missing")


@dataclass
class CaseResult:
    name: str
    hidden: bool
    status: str  # "pass", "fail", "error", "timeout", "not implemented", "missing"
    message: str = ""
    hint: str = ""  # no longer filled: hints come on request (kept so older JSON loads)
    seconds: float = 0.0
    mistake: str = ""  # the name of the known mistake the answer equals, if any
    mistake_explanation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def detail_lines(self) -> list[str]:
        """What went wrong, symptom first, then the known mistake it matches (if one does)."""
        lines = self.message.splitlines()
        if self.mistake:
            lines.append(f"This matches a known mistake: {self.mistake} — "
                         f"{self.mistake_explanation}")
        return lines


#: Statuses after which a hint can help (not "missing" or "timeout": those say what to do).
_HINTABLE = ("fail", "error", "not implemented")


@dataclass
class ExerciseReport:
    exercise: str
    function: str
    points: float
    cases: list[CaseResult] = field(default_factory=list)
    demo: bool = False
    hint_tiers: int = 0  # how many hints check.hint(...) can show for this exercise

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

    def how_to_get_a_hint(self) -> str:
        """The line that tells a stuck learner how to ask for a hint ("" when none would help)."""
        if not self.hint_tiers or not any(c.status in _HINTABLE for c in self.cases):
            return ""
        return (f'Stuck? Run check.hint("{self.exercise}") for a hint; each call gives a more '
                f"explicit one ({self.hint_tiers} in all, the last is the solution).")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, score=self.score)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExerciseReport:
        """The report back from :meth:`to_json`, including JSON written by older versions."""
        known = {f.name for f in fields(CaseResult)}
        cases = [CaseResult(**{k: v for k, v in c.items() if k in known})
                 for c in data.get("cases", [])]
        return cls(data["exercise"], data["function"], data["points"], cases,
                   data.get("demo", False), data.get("hint_tiers", 0))

    def __str__(self) -> str:
        lines = [self.summary()]
        footer = [f"  {self.how_to_get_a_hint()}"] if self.how_to_get_a_hint() else []
        details = {tuple(c.detail_lines()) for c in self.cases}
        if len(self.cases) > 1 and len(details) == 1 and not any(c.passed for c in self.cases):
            # Every case failed the same way (not implemented, missing): say it once.
            said = "\n    ".join(details.pop())
            return "\n".join([f"{lines[0]}\n  all {len(self.cases)} cases: {said}", *footer])
        for case in self.cases:
            mark = "ok  " if case.passed else "FAIL"
            label = f"{case.name} (hidden)" if case.hidden else case.name
            lines.append(f"  [{mark}] {label}")
            if not case.passed:
                lines.extend(f"         {line}" for line in case.detail_lines())
        return "\n".join(lines + footer)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#b35900"
        rows = []
        for case in self.cases:
            mark = "&#10004;" if case.passed else "&#10008;"
            detail = "" if case.passed else html.escape(case.message).replace("\n", "<br>")
            if case.mistake and not case.passed:
                detail += (f"<br><b>This matches a known mistake:</b> "
                           f"{html.escape(case.mistake)} — {html.escape(case.mistake_explanation)}")
            rows.append(
                f"<tr><td style='color:{'#1a7f37' if case.passed else '#cf222e'}'>{mark}</td>"
                f"<td style='text-align:left'>{html.escape(case.name)}</td>"
                f"<td style='text-align:left'>{detail}</td></tr>"
            )
        footer = self.how_to_get_a_hint()
        footer = f"<div><i>{html.escape(footer)}</i></div>" if footer else ""
        return (
            f"<div class='course-check'><b style='color:{colour}'>"
            f"{html.escape(self.summary())}</b>"
            f"<table style='margin-left:0'>{''.join(rows)}</table>{footer}</div>"
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


def _show(value: Any) -> None:
    """Display in Jupyter (rich output), print in plain Python."""
    try:
        from IPython.display import display
    except ImportError:
        print(value)
        return
    display(value)  # outside a running IPython this prints the text form


@dataclass
class Exercise:
    """A graded exercise: the learner writes ``function``; the cases say what it must do.

    ``mistakes`` are the known wrong answers a failed case is compared with; ``hints`` are shown
    one at a time on request by :func:`hint`, from gentle to explicit, the last being the full
    solution line. Every exercise registers itself by name in :data:`EXERCISES`.
    """

    name: str
    function: str
    cases: list[Case]
    points: float = 1.0
    time_limit: float = DEFAULT_TIME_LIMIT
    demo: bool = False
    mistakes: list[Mistake] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    #: Turns what the learner's function returned into the data that is judged, where that
    #: function ran (the learner's kernel when grading): e.g. a loss and its gradients, since a
    #: graph cannot cross to the grader. ``capture(inputs, returned) -> data``.
    capture: Callable[[dict[str, Any], Any], Any] | None = None
    #: Dotted names of the library code the check compares with (``"diffusers.DDPMScheduler"``):
    #: the grader scores 0 a function whose source reaches them, or the course's own reference.
    oracles: tuple[str, ...] = ()
    #: The input keys handed to the learner's function (and to each known mistake), when not
    #: all of them: the rest are for ``verify`` and ``capture`` alone, e.g. the tensors a
    #: returned layer is probed with. None: every input is an argument.
    arguments: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Authoring slips show up when the lesson module is imported, not in a learner's check.
        if not all(isinstance(m, Mistake) for m in self.mistakes):
            raise TypeError(f"{self.name}: mistakes must be Mistake(name, fn, explanation)")
        if not all(isinstance(h, str) and h for h in self.hints):
            raise TypeError(f"{self.name}: hints must be non-empty strings")
        EXERCISES[self.name] = self

    def arguments_of(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the learner's function gets: ``inputs``, or only the keys
        named in ``arguments`` (KeyError for a named key the case does not build)."""
        if self.arguments is None:
            return inputs
        return {key: inputs[key] for key in self.arguments}

    def hint_tiers(self) -> list[str]:
        """The hints :func:`hint` shows in turn: ``hints``, else the older per-case hints."""
        if self.hints:
            return list(self.hints)
        public = [c.hint for c in self.cases if c.hint and not c.hidden]
        return list(dict.fromkeys(public))  # distinct, in order

    def hint(self) -> None:
        """Show the next hint for this exercise (see :func:`hint`)."""
        hint(self)

    def run(self, fn: Any, include_hidden: bool = False) -> ExerciseReport:
        """Run the public cases (and the hidden ones when grading) against ``fn``.

        The learner's global random state is the same afterwards as before.
        """
        report = ExerciseReport(self.name, self.function, self.points, demo=self.demo,
                                hint_tiers=len(self.hint_tiers()))
        cases = [c for c in self.cases if include_hidden or not c.hidden]
        problem = _not_learner_code(fn, self.function)
        with preserved_rng():
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
        _show(self.run(fn))

    def passes(self, fn: Any) -> bool:
        """True when ``fn`` passes every public case; nothing is shown (for a lesson that reveals
        the package's own code only once the learner's version works)."""
        return self.run(fn).passed

    def _run_case(self, fn: Callable, case: Case) -> CaseResult:
        inputs = case.make_inputs()
        return self.judge(case, inputs, self.call(fn, case, inputs))

    def call(self, fn: Any, case: Case, inputs: dict[str, Any]) -> Answer:
        """Call the learner's ``fn`` on a copy of ``inputs`` and say what happened; no verdict.

        The half of a case that runs learner code: in the notebook's kernel when grading, where
        the answer is handed back as data and :meth:`judge` runs in the grader's process.
        ``inputs`` is left as it was; the global random state too.
        """
        problem = _not_learner_code(fn, self.function)
        if problem:
            return Answer("missing", message=problem)
        learner_inputs = clone_inputs(inputs)
        start = time.perf_counter()

        def answer(status: str, value: Any = None, message: str = "") -> Answer:
            changed = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)
                       and not torch.equal(v, learner_inputs[k])]
            return Answer(status, value, message, changed,
                          round(time.perf_counter() - start, 4))

        with preserved_rng():
            try:
                _seed_case()
                with time_limit(self.time_limit):
                    got = fn(**self.arguments_of(learner_inputs))
                    if self.capture is not None:
                        got = self.capture(learner_inputs, got)
            except CheckTimeout:
                return answer("timeout", message=f"{self.function} did not return within "
                              f"{self.time_limit:g} s (an endless loop?)")
            except NotImplementedError:
                return answer("not implemented", message=f"{self.function} is not implemented "
                              "yet (it raised NotImplementedError)")
            except BaseException as error:  # noqa: BLE001 - SystemExit too: the learner's bug
                status = "raised" if case.raises and isinstance(error, case.raises) else "error"
                return answer(status, message=f"{self.function} raised {type(error).__name__}: "
                              f"{error}{_where_it_failed(error)}")
        return answer("returned", got)

    def judge(self, case: Case, inputs: dict[str, Any], answer: Answer) -> CaseResult:
        """The verdict on ``answer`` to ``case``, from the oracle and the known mistakes.

        ``inputs`` are the ones the answer was computed from. Runs no learner code, so the
        grader calls it in its own process on what the kernel handed back.
        """

        def result(status: str, message: str = "") -> CaseResult:
            return CaseResult(case.name, case.hidden, status, message, seconds=answer.seconds)

        if answer.status == "raised":
            return result("pass" if case.raises else "error", answer.message)
        if answer.status not in ANSWER_STATUSES:  # a hand-made answer file, not call()'s
            return result("error", f"unreadable answer (status {answer.status[:40]!r})")
        if answer.status != "returned":
            return result(answer.status, answer.message)
        # Kept untouched for the known mistakes, whatever the oracle does to its inputs.
        pristine = clone_inputs(inputs) if self.mistakes else {}
        with preserved_rng():
            problem = self._problem(case, inputs, answer)
            if not problem:
                return result("pass")
            failed = result("fail", problem)
            mistake = self._matching_mistake(pristine, answer.value)
        if mistake is not None:
            failed.mistake, failed.mistake_explanation = mistake.name, mistake.explanation
        return failed

    def _problem(self, case: Case, inputs: dict[str, Any], answer: Answer) -> str | None:
        """What is wrong with an answer that came back (None when it is right)."""
        if case.raises is not None:
            return (f"expected {case.raises.__name__} to be raised, but {self.function} "
                    f"returned {describe(answer.value)}")
        if answer.changed:
            return (f"{self.function} changed its input {', '.join(answer.changed)} in place; "
                    "the caller's tensors must be left as they were")
        try:
            return case.verify(inputs, answer.value)
        except Exception as error:  # a malformed answer the comparison could not even read
            return (f"could not compare the answer ({type(error).__name__}: {error}); "
                    f"got {describe(answer.value)}")

    def _matching_mistake(self, pristine: dict[str, Any], got: Any) -> Mistake | None:
        """The first known mistake whose answer on the same inputs equals ``got``, if any.

        When several agree within the matching tolerance, the closest one is named: two
        mistakes can differ by less than that tolerance on some inputs. All of them together
        get one time limit; a mistake that raises simply does not match.
        """
        best, best_distance = None, math.inf
        try:
            with time_limit(self.time_limit):
                for mistake in self.mistakes:
                    try:
                        _seed_case()  # the draws the learner's code saw
                        mistaken_inputs = clone_inputs(pristine)
                        theirs = mistake.fn(**self.arguments_of(mistaken_inputs))
                        if self.capture is not None:
                            theirs = self.capture(mistaken_inputs, theirs)
                        if same_answer(got, theirs):
                            distance = _distance(got, theirs)
                            if distance < best_distance:
                                best, best_distance = mistake, distance
                    except Exception:  # noqa: BLE001 - a mistake that cannot run matches nothing
                        continue
        except CheckTimeout:
            pass  # out of time: name what matched so far rather than keep the learner waiting
        return best


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


# --------------------------------------------------------------------------------------------
# Hints on request
# --------------------------------------------------------------------------------------------


@dataclass
class Hint:
    """One hint as shown to the learner: tier ``number`` of ``total`` for ``exercise``."""

    exercise: str
    number: int
    total: int
    text: str
    is_solution: bool = False

    def title(self) -> str:
        if self.is_solution:
            return f"{self.exercise}: the solution (hint {self.number} of {self.total})"
        return f"{self.exercise}: hint {self.number} of {self.total}"

    def footer(self) -> str:
        if self.number < self.total:
            return f'Run check.hint("{self.exercise}") again for a more explicit hint.'
        return "" if self.is_solution else "That was the last hint."

    def __str__(self) -> str:
        return "\n".join(line for line in (self.title(), f"  {self.text}", self.footer()) if line)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        footer = f"<br><i>{html.escape(self.footer())}</i>" if self.footer() else ""
        text = html.escape(self.text)
        text = f"<code>{text}</code>" if self.is_solution else text  # the solution is code
        return (f"<div class='course-hint'><b>{html.escape(self.title())}</b><br>"
                f"{text}{footer}</div>")


@dataclass
class HintMessage:
    """Something :func:`hint` says instead of a hint (an unknown name, no hints written)."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<div class='course-hint'>{html.escape(self.text)}</div>"


def hint(exercise_or_name: Exercise | str | Callable[..., Any]) -> None:
    """Show the next hint for an exercise; each call is more explicit, the last is the solution.

    ``exercise_or_name`` is an :class:`Exercise`, its name (``check.hint("forward_diffusion")``)
    or the learner's function of that name. An unknown name lists the known ones instead.
    """
    _show(next_hint(exercise_or_name))


def next_hint(exercise_or_name: Exercise | str | Callable[..., Any]) -> Hint | HintMessage:
    """What :func:`hint` shows, and the step to the next tier; returned rather than displayed."""
    exercise = find_exercise(exercise_or_name)
    if exercise is None:
        known = ", ".join(sorted(EXERCISES)) or "none loaded"
        return HintMessage(f"There is no exercise named {_name_of(exercise_or_name)!r}. "
                           f"Known exercises: {known}.")
    tiers = exercise.hint_tiers()
    if not tiers:
        return HintMessage(f"{exercise.name} has no hints yet: the check's message is the best "
                           "guide to what to change.")
    number = min(_HINTS_SHOWN.get(exercise.name, 0) + 1, len(tiers))
    _HINTS_SHOWN[exercise.name] = number
    # Only hints written for the purpose end in the solution; older per-case hints may not.
    return Hint(exercise.name, number, len(tiers), tiers[number - 1],
                is_solution=bool(exercise.hints) and number == len(tiers))


def reset_hints(name: str | None = None) -> None:
    """Start the hints of one exercise (or of all) from the first tier again."""
    if name is None:
        _HINTS_SHOWN.clear()
    else:
        _HINTS_SHOWN.pop(name, None)


def find_exercise(exercise_or_name: Exercise | str | Callable[..., Any]) -> Exercise | None:
    """The exercise meant: itself, the one of that name, or the one whose function that is."""
    if isinstance(exercise_or_name, Exercise):
        return exercise_or_name
    name = _name_of(exercise_or_name)
    for attempt in range(2):
        by_function = {}
        for e in EXERCISES.values():  # the first exercise of a function (a class may have two)
            by_function.setdefault(e.function, e)
        found = EXERCISES.get(name) or by_function.get(name)
        if found is not None or attempt:
            return found
        _load_every_lesson()  # the name may belong to a lesson not imported yet
    return None


def _name_of(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def _load_every_lesson() -> None:
    """Import every lesson's checks, so that all exercises are registered."""
    from importlib import import_module

    lessons = import_module(__package__).LESSONS
    for module in lessons.values():
        with contextlib.suppress(Exception):  # one broken lesson must not hide the others
            import_module(f".{module}", __package__)
