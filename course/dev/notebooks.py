"""Run a notebook top to bottom in a fresh kernel, FAST or in the learner's default mode.

The one executor behind the benchmark, the authoring tools and the notebook tests. It drives
the same kernel machinery as the grader (:class:`course.grading.sandbox.KernelSandbox`), here
unfenced: the course's own notebooks run with the caller's environment, in their own folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat

from ..grading.sandbox import KernelSandbox, Limits


class CellError(RuntimeError):
    """A cell raised, hung or killed the kernel while errors were not allowed."""


def _with_parameters(notebook, parameters: dict) -> None:
    """Insert ``parameters`` after the cell tagged ``parameters``, as papermill does."""
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)


def execute_notebook(path, *, fast: bool = True, timeout: int = 600, allow_errors: bool = False,
                     parameters: dict | None = None, extra_cells: tuple[str, ...] = (),
                     env: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, float]:
    """Execute the notebook at ``path`` (plus ``extra_cells`` at the end) in a fresh kernel.

    The kernel starts in the notebook's folder, offline, with ``COURSE_FAST`` set from ``fast``;
    ``parameters`` are injected after the parameters cell; ``timeout`` bounds each cell; ``env``
    adds variables to the kernel's environment.
    Returns the executed notebook and the wall time in seconds. A cell that raises is a
    :class:`CellError` unless ``allow_errors``; one that hangs or kills the kernel always is.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    if parameters:
        _with_parameters(notebook, parameters)
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in extra_cells]
    env = {"COURSE_FAST": "1" if fast else "0", "HF_HUB_OFFLINE": "1", **(env or {})}
    with KernelSandbox(Limits(cell_timeout=timeout), env=env, fenced=False,
                       cwd=path.parent.resolve()) as kernel:
        start = time.perf_counter()
        count = 0
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            count += 1
            outcome = kernel.execute(cell.source, timeout=timeout, keep_outputs=True)
            cell.outputs, cell.execution_count = list(outcome.outputs), count
            if outcome.status in ("dead", "timeout") or (
                    outcome.status == "error" and not allow_errors):
                raise CellError(f"{path.name}, code cell {count}: {outcome.status} "
                                f"{outcome.error}".rstrip())
        return notebook, time.perf_counter() - start
