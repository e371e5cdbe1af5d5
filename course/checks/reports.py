"""Verdicts: one per case (:class:`CaseResult`), gathered per exercise (:class:`ExerciseReport`).

A report shows itself as a table in Jupyter and as plain text elsewhere, and carries a
machine-readable copy (mime type :data:`MIME`) that the notebook tests read back. A failed case
first names the symptom (what differs, and at which index), then the known mistake the answer
equals, if one does; the way to a hint comes last, the hint itself only on request.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from .status import HINTABLE, Status

#: Mime type of the machine-readable copy of a report in notebook outputs.
MIME = "application/vnd.course.check+json"


@dataclass
class CaseResult:
    name: str
    hidden: bool
    status: Status  # PASS, FAIL, or what the call said: ERROR, TIMEOUT, NOT_IMPLEMENTED, MISSING
    message: str = ""
    seconds: float = 0.0
    mistake: str = ""  # the name of the known mistake the answer equals, if any
    mistake_explanation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == Status.PASS

    def detail_lines(self) -> list[str]:
        """What went wrong, symptom first, then the known mistake it matches (if one does)."""
        lines = self.message.splitlines()
        if self.mistake:
            lines.append(f"This matches a known mistake: {self.mistake} — "
                         f"{self.mistake_explanation}")
        return lines


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
        if not self.hint_tiers or not any(c.status in HINTABLE for c in self.cases):
            return ""
        return (f'Stuck? Run check.hint("{self.exercise}") for a hint; each call gives a more '
                f"explicit one ({self.hint_tiers} in all, the last is the solution).")

    def to_json(self) -> dict[str, Any]:
        """The machine-readable copy shown with the report (:data:`MIME`)."""
        data = asdict(self)
        data.update(passed=self.passed, score=self.score)
        return data

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


def show(value: Any) -> None:
    """Display in Jupyter (rich output), print in plain Python."""
    try:
        from IPython.display import display
    except ImportError:
        print(value)
        return
    display(value)  # outside a running IPython this prints the text form
