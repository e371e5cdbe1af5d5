"""An exercise: the cases a learner's function must pass, run and judged.

Running a case has two halves. :meth:`Exercise.call` runs the learner's code on a copy of the
case's inputs, under a time limit, and says what happened (an :class:`Answer`).
:meth:`Exercise.judge` compares what came back with an oracle from a reference library
(diffusers, transformers, peft or torch; never this package's own code) and with the exercise's
known mistakes. In a lesson both halves run in the kernel (:meth:`Exercise.run`); when grading,
the call runs in the learner's kernel and the judging in the grader's process.

Nothing the learner's code does can take the kernel down with it: exceptions, wrong types,
NaNs and endless loops all become a failed case with a message saying what was expected and
what came. The learner's global random state is the same after a check as before.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .cases import Answer, Case, Mistake, clone_inputs
from .hints import next_hint_of
from .judging import describe, distance, same_answer
from .limits import DEFAULT_TIME_LIMIT, CheckTimeout, preserved_rng, seed_case, time_limit
from .reports import CaseResult, ExerciseReport, show
from .status import ANSWER_STATUSES, Status


@dataclass
class Exercise:
    """A graded exercise: the learner writes ``function``; the cases say what it must do.

    ``mistakes`` are the known wrong answers a failed case is compared with; ``hints`` are shown
    one at a time on request (``check.hint(name)``), from gentle to explicit, the last being the
    full solution line. A ``demo`` exercise shows how checks work and is not graded. A lesson
    declares its exercises in its module's ``EXERCISES`` (:mod:`course.checks.catalog`).
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

    def arguments_of(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the learner's function gets: ``inputs``, or only the keys
        named in ``arguments`` (KeyError for a named key the case does not build)."""
        if self.arguments is None:
            return inputs
        return {key: inputs[key] for key in self.arguments}

    def hint(self) -> None:
        """Show the next hint for this exercise (``check.hint(name)`` does the same)."""
        show(next_hint_of(self))

    def empty_report(self) -> ExerciseReport:
        """A report on this exercise with no case judged yet."""
        return ExerciseReport(self.name, self.function, self.points, demo=self.demo,
                              hint_tiers=len(self.hints))

    def run(self, fn: Any, include_hidden: bool = False) -> ExerciseReport:
        """Run the public cases (and the hidden ones when grading) against ``fn``.

        The learner's global random state is the same afterwards as before.
        """
        report = self.empty_report()
        cases = [c for c in self.cases if include_hidden or not c.hidden]
        problem = _not_learner_code(fn, self.function)
        with preserved_rng():
            for case in cases:
                if problem:
                    report.cases.append(CaseResult(case.name, case.hidden, Status.MISSING,
                                                   problem))
                    continue
                inputs = case.make_inputs()
                result = self.judge(case, inputs, self.call(fn, case, inputs))
                report.cases.append(result)
                if result.status == Status.TIMEOUT:
                    # One endless loop is enough to know; do not spend the time limit again.
                    problem = "not run: an earlier case did not return in time"
        return report

    def __call__(self, fn: Any) -> None:
        """Check ``fn`` on the public cases and show the verdict (what a lesson cell calls)."""
        show(self.run(fn))

    def passes(self, fn: Any) -> bool:
        """True when ``fn`` passes every public case; nothing is shown (for a lesson that reveals
        the package's own code only once the learner's version works)."""
        return self.run(fn).passed

    def call(self, fn: Any, case: Case, inputs: dict[str, Any]) -> Answer:
        """Call the learner's ``fn`` on a copy of ``inputs`` and say what happened; no verdict.

        The half of a case that runs learner code: in the notebook's kernel when grading, where
        the answer is handed back as data and :meth:`judge` runs in the grader's process.
        ``inputs`` is left as it was; the global random state too.
        """
        problem = _not_learner_code(fn, self.function)
        if problem:
            return Answer(Status.MISSING, message=problem)
        learner_inputs = clone_inputs(inputs)
        start = time.perf_counter()

        def answer(status: Status, value: Any = None, message: str = "") -> Answer:
            changed = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)
                       and not torch.equal(v, learner_inputs[k])]
            return Answer(status, value, message, changed,
                          round(time.perf_counter() - start, 4))

        with preserved_rng():
            try:
                seed_case()
                with time_limit(self.time_limit):
                    got = fn(**self.arguments_of(learner_inputs))
                    if self.capture is not None:
                        got = self.capture(learner_inputs, got)
            except CheckTimeout:
                return answer(Status.TIMEOUT, message=f"{self.function} did not return within "
                              f"{self.time_limit:g} s (an endless loop?)")
            except NotImplementedError:
                return answer(Status.NOT_IMPLEMENTED, message=f"{self.function} is not "
                              "implemented yet (it raised NotImplementedError)")
            except BaseException as error:  # noqa: BLE001 - SystemExit too: the learner's bug
                expected = case.raises and isinstance(error, case.raises)
                return answer(Status.RAISED if expected else Status.ERROR,
                              message=f"{self.function} raised {type(error).__name__}: "
                              f"{error}{_where_it_failed(error)}")
        return answer(Status.RETURNED, got)

    def judge(self, case: Case, inputs: dict[str, Any], answer: Answer) -> CaseResult:
        """The verdict on ``answer`` to ``case``, from the oracle and the known mistakes.

        ``inputs`` are the ones the answer was computed from. Runs no learner code, so the
        grader calls it in its own process on what the kernel handed back.
        """

        def result(status: Status, message: str = "") -> CaseResult:
            return CaseResult(case.name, case.hidden, status, message, seconds=answer.seconds)

        if answer.status == Status.RAISED:
            return result(Status.PASS if case.raises else Status.ERROR, answer.message)
        if answer.status not in ANSWER_STATUSES:  # a hand-made answer file, not call()'s
            return result(Status.ERROR, f"unreadable answer (status {answer.status[:40]!r})")
        if answer.status != Status.RETURNED:
            return result(Status(answer.status), answer.message)
        # Kept untouched for the known mistakes, whatever the oracle does to its inputs.
        pristine = clone_inputs(inputs) if self.mistakes else {}
        with preserved_rng():
            problem = self._problem(case, inputs, answer)
            if not problem:
                return result(Status.PASS)
            failed = result(Status.FAIL, problem)
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

    def answer_of(self, mistake: Mistake, inputs: dict[str, Any]) -> Any:
        """What ``mistake`` answers on a copy of ``inputs``, from the seed the learner's code
        starts from (so it draws what the learner's code drew), captured as the learner's is.

        It seeds the global generators: call it inside :func:`preserved_rng`, as :meth:`judge`
        does."""
        seed_case()
        mistaken_inputs = clone_inputs(inputs)
        theirs = mistake.fn(**self.arguments_of(mistaken_inputs))
        if self.capture is not None:
            theirs = self.capture(mistaken_inputs, theirs)
        return theirs

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
                        theirs = self.answer_of(mistake, pristine)
                        if same_answer(got, theirs):
                            apart = distance(got, theirs)
                            if apart < best_distance:
                                best, best_distance = mistake, apart
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


def _where_it_failed(error: BaseException) -> str:
    """The learner's line that raised, found as the last frame outside this package."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if "/course/" not in f.filename.replace("\\", "/")]
    if not own:
        return ""
    frame = own[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"\n  in {frame.name}, line {frame.lineno}{code}"
