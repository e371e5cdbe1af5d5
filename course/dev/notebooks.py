"""Run a notebook top to bottom in a fresh kernel, FAST or in the learner's default mode.

The one executor behind the benchmark, the authoring tools and the notebook tests. (The grader
does not run notebooks this way: it drives a sandboxed kernel cell by cell, see
:mod:`course.grading.sandbox`.)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block, then restore them."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute_notebook(path, *, fast: bool = True, timeout: int = 600, allow_errors: bool = False,
                     extra_cells: tuple[str, ...] = ()) -> tuple[nbformat.NotebookNode, float]:
    """Execute the notebook at ``path`` (plus ``extra_cells`` at the end) in a fresh kernel.

    The kernel starts in the notebook's folder, offline, with ``COURSE_FAST`` set from ``fast``.
    ``timeout`` bounds each cell. Returns the executed notebook and the wall time in seconds;
    a cell error raises nbclient's CellExecutionError unless ``allow_errors``.
    """
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in extra_cells]
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            allow_errors=allow_errors, store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    with _environment(COURSE_FAST="1" if fast else "0", HF_HUB_OFFLINE="1"):
        start = time.perf_counter()
        client.execute()
        return notebook, time.perf_counter() - start
