"""The instructor's grader: ``python -m course grade NOTEBOOK... [--json results.json]``."""

from .grader import (
    NotebookGrade,
    format_table,
    grade_notebook,
    lesson_of,
    results_json,
)

__all__ = ["NotebookGrade", "format_table", "grade_notebook", "lesson_of", "results_json"]
