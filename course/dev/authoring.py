"""solutions/ -> lessons/: the solution notebooks are the single source of every lesson.

A lesson is its solution with the answers taken out:

- each region between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (lines of a code cell) becomes
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, indented like the marker;
- cells tagged ``solution-only`` are dropped;
- outputs and execution counts are cleared.

``build_lessons(check=True)`` writes nothing and lists the lessons that are out of date.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
SOLUTION_ONLY = "solution-only"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)# (?P<kind>BEGIN|END) SOLUTION\s*$")


class AuthoringError(ValueError):
    """A solution notebook whose markers do not pair up."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution region of one cell's source with a stub."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        marker = _MARKER.match(line)
        if marker and marker["kind"] == "BEGIN":
            if inside:
                raise AuthoringError(f"{where}, line {number}: {BEGIN} inside another region")
            inside = True
            indent = marker["indent"]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif marker:  # END
            if not inside:
                raise AuthoringError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise AuthoringError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def lesson_from_solution(solution: nbformat.NotebookNode, name: str = "notebook"):
    """The learner's version of a solution notebook (a new object; the input is untouched)."""
    metadata = {k: v for k, v in solution.metadata.items() if k != "widgets"}  # no widget state
    lesson = nbformat.v4.new_notebook(metadata=metadata)
    for index, cell in enumerate(solution.cells):
        if SOLUTION_ONLY in cell.get("metadata", {}).get("tags", []):
            continue
        metadata = dict(cell.get("metadata", {}))
        metadata.pop("execution", None)
        if cell.cell_type == "code":
            source = strip_solutions(cell.source, where=f"{name}, cell {index}")
            new = nbformat.v4.new_code_cell(source, metadata=metadata)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=metadata)
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=metadata)
        if "id" in cell:
            new["id"] = cell["id"]  # stable ids keep diffs of lessons/ small
        lesson.cells.append(new)
    return lesson


def render(notebook) -> str:
    """The exact text a notebook is written as (what --check compares)."""
    return nbformat.writes(notebook, version=4) + "\n"


def build_lessons(solutions_dir="solutions", lessons_dir="lessons", check=False) -> list[Path]:
    """Write lessons/ from solutions/ and return the lessons written.

    With ``check=True`` nothing is written: the list holds the lessons that are missing or stale,
    and the lessons that no longer have a solution.
    """
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    sources = sorted(solutions_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no solution notebooks in {solutions_dir}/")
    changed: list[Path] = []
    for source in sources:
        target = lessons_dir / source.name
        text = render(lesson_from_solution(nbformat.read(source, as_version=4), source.name))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            changed.append(target)
            if not check:
                lessons_dir.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    expected = {s.name for s in sources}
    orphans = [p for p in sorted(lessons_dir.glob("*.ipynb")) if p.name not in expected]
    if check:
        changed += orphans
    return changed


CHECKED_OUTPUT = "# NBVAL_CHECK_OUTPUT"


def store_checked_outputs(path, timeout: int = 600) -> int:
    """Execute a solution notebook (FAST) and keep only the outputs nbval compares.

    Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their text output, which nbval then requires every
    later run to reproduce; all other outputs are dropped so that notebooks stay small and free
    of images. The notebook is written back as it was otherwise (no trace of papermill's
    injected parameters). Returns the number of cells whose output was stored.
    """
    from .notebooks import execute_notebook

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    executed, _ = execute_notebook(path, fast=True, timeout=timeout)
    ran = {cell.id: cell for cell in executed.cells if cell.cell_type == "code"}
    stored = 0
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        cell.metadata.pop("execution", None)
        if CHECKED_OUTPUT in cell.source:  # nbval wants the count of a cell with outputs
            cell.outputs = [o for o in ran[cell.id].outputs if o.output_type == "stream"]
            cell.execution_count = number  # the notebook's own numbering of its code cells
            stored += 1
        else:
            cell.execution_count = None
            cell.outputs = []
    path.write_text(render(notebook), encoding="utf-8")
    return stored
