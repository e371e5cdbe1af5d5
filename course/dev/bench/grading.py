"""How long the instructor's grader (``python -m course grade``) takes per notebook: each
solution notebook graded as a learner's would be, in its sandbox, FAST as by default."""

from __future__ import annotations

#: the notebook ``--quick`` grades: few exercises, a quick run
QUICK_GRADING = ("01_",)


def bench_grading(only=None) -> list[dict]:
    """One row per solution notebook with exercises: seconds, score, and notes if any."""
    from ...grading import grade_notebook
    from .speed import solution_notebooks

    rows = []
    for path in solution_notebooks(only):
        grade = grade_notebook(path)
        rows.append({"notebook": path.name, "seconds": round(grade.seconds, 2),
                     "score": grade.score, "max_score": grade.max_score,
                     "exercises": len(grade.tests), "notes": list(grade.notes)})
    return rows
