"""Run a notebook top to bottom in a fresh kernel, FAST or in the learner's default mode.

The executor behind the benchmark, the authoring tools and the notebook tests is papermill:
``papermill.execute_notebook`` injects ``FAST`` (and any other parameters) after the cell tagged
``parameters``, runs every cell through nbclient in a new ``python3`` kernel started in the
notebook's folder, and hands back the executed notebook. The grader does not use this: learners'
notebooks run in its own fenced kernel (``course.grading``).

The outputs that ``# NBVAL_CHECK_OUTPUT`` marks are compared by nbval, not here: ``make test``
runs ``pytest --nbval-lax solutions/`` (see ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat

#: the kernel the course's notebooks declare, and the one the course's environment provides
KERNEL = "python3"


class CellError(RuntimeError):
    """A cell raised, hung or killed the kernel while errors were not allowed."""


@contextlib.contextmanager
def _environment(variables: dict[str, str | None]) -> Iterator[None]:
    """``variables`` set in this process's environment (which the kernel inherits; None: taken
    out of it), then put back as they were."""
    saved = {name: os.environ.get(name) for name in variables}
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_notebook(path, *, fast: bool = True, timeout: int = 600, allow_errors: bool = False,
                     parameters: dict | None = None, extra_cells: tuple[str, ...] = (),
                     env: dict[str, str | None] | None = None,
                     ) -> tuple[nbformat.NotebookNode, float]:
    """Execute the notebook at ``path`` (plus ``extra_cells`` at the end) with papermill.

    ``FAST`` is injected from ``fast`` (the lessons' parameter) and ``COURSE_FAST`` set to match;
    ``parameters`` are injected too; the kernel runs in the notebook's folder, offline
    (``HF_HUB_OFFLINE=1``), with ``env`` added to its environment (None takes a variable out);
    ``timeout`` bounds each cell.
    Returns the executed notebook (papermill's injected-parameters cell included, tagged
    ``injected-parameters``) and the wall time in seconds, kernel start included.
    A cell that raises is a :class:`CellError` unless ``allow_errors``, in which case every cell
    still runs and its error is in its outputs; a cell that hangs or kills the kernel always is.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import ERROR_MARKER_TAG

    path = Path(path).resolve()
    notebook = nbformat.read(path, as_version=4)
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in extra_cells]
    variables = {"COURSE_FAST": "1" if fast else "0", "HF_HUB_OFFLINE": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="course-run-") as folder, _environment(variables):
        output = Path(folder) / path.name
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                notebook, output, parameters={"FAST": fast, **(parameters or {})},
                kernel_name=KERNEL, cwd=str(path.parent), execution_timeout=timeout,
                allow_errors=allow_errors, progress_bar=False, log_output=False,
                request_save_on_cell_execute=False)
        except PapermillExecutionError as error:
            if not allow_errors:
                raise CellError(f"{path.name}, code cell {error.exec_count}: {error.ename}: "
                                f"{error.evalue}") from None
        except Exception as error:  # a hung cell, a dead kernel: never allowed
            raise CellError(f"{path.name}: {type(error).__name__}: {error}") from error
        seconds = time.perf_counter() - start
        executed = nbformat.read(output, as_version=4)
    # papermill marks the first error with two banner cells; they are not the notebook's own
    executed.cells = [c for c in executed.cells
                      if ERROR_MARKER_TAG not in c.metadata.get("tags", [])]
    return executed, seconds
