"""The grader's half inside the learner's kernel: call the learner's function on one case.

The grader sends the kernel one line, once per kernel start (``grader._RUNNER``), importing
:func:`answer_case` from here; then, for each case, it calls that function with the stem of the
input files it wrote into the sandbox's read-only input folder. The answer goes back as one
display message (MIME type ``ANSWER_MIME``), never as a file: the kernel has nothing to write
that the grader would open. Whatever the learner's code did to this kernel (this module
included), the worst it can change is its own answers, which the grader judges in its own
process.
"""

from __future__ import annotations

from pathlib import Path

ANSWER_MIME = "application/vnd.course.answer+json"


def answer_case(stem: str, namespace: dict) -> None:
    """Run case ``request["case"]`` of the exercise the input file names with the function of
    that name in ``namespace`` (the notebook's globals), and publish the answer.

    The case's inputs are built here as the lesson builds them, and the tensors the grader
    wrote replace those of the same name: the grader judges the answer against its own copy.
    """
    # Looked up at each call, in this kernel's modules as the notebook left them: a notebook
    # that patches them forges its own answers, which the grader reads as data all the same.
    from IPython.display import publish_display_data

    from ..checks import exercises_for
    from .exchange import pack_value, read_value

    inputs, request = read_value(Path(stem))
    exercise = {e.name: e for e in exercises_for(request["lesson"])}[request["exercise"]]
    case = exercise.cases[request["case"]]
    full = case.make_inputs()
    full.update({k: v for k, v in inputs.items() if k in full})
    answer = exercise.call(namespace.get(exercise.function), case, full)
    publish_display_data({ANSWER_MIME: pack_value(answer.value, {
        "status": answer.status, "message": answer.message, "changed": answer.changed})})
