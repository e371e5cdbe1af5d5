"""Every status the checks and the grader speak of, in one vocabulary.

Three places say how something ended: the learner's kernel (a cell or a grader's call ran ``ok``,
raised an ``error``, hit a ``timeout``, died: ``dead``, or filled its memory: ``out of memory``),
:meth:`~course.checks.exercise.Exercise.call` (the learner's function ``returned``, ``raised`` the
exception a case expects, raised another: ``error``, ran into the ``timeout``, is ``not
implemented`` or ``missing``), and the verdict on a case (``pass``, ``fail``, or the call's
``error``, ``timeout``, ``not implemented``, ``missing`` passed on). ``error`` and ``timeout`` mean
the same in all three.

The members are strings (``Status.PASS == "pass"``), so reports, answers sent back by the kernel
and the grader's JSON read exactly as they did when these were plain strings.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    # How a kernel execution ended (course.grading.sandbox)
    OK = "ok"
    DEAD = "dead"
    OUT_OF_MEMORY = "out of memory"
    # What the learner's function did (Exercise.call)
    RETURNED = "returned"
    RAISED = "raised"
    NOT_IMPLEMENTED = "not implemented"
    MISSING = "missing"
    # The verdict on a case (CaseResult)
    PASS = "pass"
    FAIL = "fail"
    # Shared by all three
    ERROR = "error"
    TIMEOUT = "timeout"

    def __str__(self) -> str:  # "pass", not "Status.PASS", wherever a status is printed
        return self.value


#: What :meth:`Exercise.call` can say of a case; anything else in an answer is not an answer.
ANSWER_STATUSES = frozenset({Status.RETURNED, Status.RAISED, Status.ERROR, Status.TIMEOUT,
                             Status.NOT_IMPLEMENTED, Status.MISSING})

#: Verdicts after which a hint can help (not "missing" or "timeout": those say what to do).
HINTABLE = frozenset({Status.FAIL, Status.ERROR, Status.NOT_IMPLEMENTED})
