"""What a reader of the code may rely on: modules meet through public names, imports have no
side effects on the learner's session."""

import ast
import subprocess
import sys

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

from tests.helpers import ROOT

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _private_imports(tree: ast.AST) -> list[str]:
    """``from x import _name`` of the course's own modules (relative or ``course.*``)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        ours = node.level > 0 or (node.module or "").split(".")[0] == "course"
        for alias in node.names:
            if ours and alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{'.' * node.level}{node.module or ''}.{alias.name}")
    return found


def test_modules_meet_through_public_names():
    problems = [f"{path.relative_to(ROOT)}: {name}"
                for path in sorted((ROOT / "course").rglob("*.py"))
                for name in _private_imports(ast.parse(path.read_text()))]
    assert not problems, "\n".join(problems)


def test_lesson_cells_import_only_public_names():
    to_python = TransformerManager().transform_cell  # %pip and friends as plain Python
    problems = []
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                names = _private_imports(ast.parse(to_python(cell.source)))
                problems += [f"{path.name}: {name}" for name in names]
    assert not problems, "\n".join(problems)


def test_the_private_import_finder_finds_them():
    tree = ast.parse("from .widgets import _picture\nfrom course.x import __version__, ok\n"
                     "from os import _exit\n")
    assert _private_imports(tree) == [".widgets._picture"]


def test_importing_the_plots_leaves_the_backend_to_the_learner():
    # A learner (or Jupyter) who chose a backend keeps it: the course never calls matplotlib.use.
    code = ("import matplotlib; matplotlib.use('svg'); import course.viz.plots, course.viz.widgets;"
            " print(matplotlib.get_backend())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert run.stdout.strip() == "svg"


def test_ruff_reads_the_solutions_code_cells_and_make_test_runs_it():
    listed = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", "solutions"],
                            capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert {path.name for path in SOLUTIONS} <= {line.rsplit("/", 1)[-1].strip()
                                                 for line in listed.splitlines()}
    lint = next(line for line in (ROOT / "Makefile").read_text().splitlines()
                if "ruff check" in line)
    assert "solutions" in lint.split()
