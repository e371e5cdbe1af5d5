"""solutions/ -> lessons/, and the shape every notebook must have."""

import json
import re

import nbformat
import pytest

from course import REPO_URL
from course.dev.authoring import (
    AuthoringError,
    build_lessons,
    lesson_from_solution,
    render,
    store_checked_outputs,
    strip_solutions,
)
from tests.helpers import LESSONS, ROOT, SOLUTIONS


def test_strip_solutions_keeps_indentation_and_the_rest():
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n"
              "    # END SOLUTION\n\nprint(f)")
    assert strip_solutions(source) == ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n"
                                       "    raise NotImplementedError()\n\nprint(f)")


def test_strip_solutions_handles_several_regions():
    region = "# BEGIN SOLUTION\n{}\n# END SOLUTION"
    source = "\n".join([region.format("a = 1"), "b = 2", region.format("c = 3")])
    out = strip_solutions(source)
    assert out.count("raise NotImplementedError()") == 2 and "b = 2" in out and "a = 1" not in out


@pytest.mark.parametrize("source, phrase", [
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
])
def test_unbalanced_markers_are_errors(source, phrase):
    with pytest.raises(AuthoringError, match=phrase):
        strip_solutions(source, where="nb.ipynb, cell 3")


def _solution():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1\n"
                                  "    # END SOLUTION",
                                  execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="hi")]),
        nbformat.v4.new_code_cell("assert f() == 1", metadata={"tags": ["solution-only"]}),
    ]
    return nb


def test_lesson_drops_solution_only_cells_and_outputs():
    solution = _solution()
    lesson = lesson_from_solution(solution)
    assert len(lesson.cells) == 2
    code = lesson.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert "raise NotImplementedError()" in code.source and "return 1" not in code.source
    assert "return 1" in solution.cells[1].source  # the solution itself is untouched


def test_build_and_check_detect_stale_and_orphan_lessons(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    solutions.mkdir()
    nbformat.write(_solution(), solutions / "01_x.ipynb")
    assert build_lessons(solutions, lessons, check=True) == [lessons / "01_x.ipynb"]
    assert build_lessons(solutions, lessons) == [lessons / "01_x.ipynb"]
    assert build_lessons(solutions, lessons, check=True) == []
    (lessons / "01_x.ipynb").write_text("{}")
    (lessons / "09_old.ipynb").write_text("{}")
    assert build_lessons(solutions, lessons, check=True) == [lessons / "01_x.ipynb",
                                                             lessons / "09_old.ipynb"]


def test_repository_lessons_are_in_sync():
    stale = build_lessons(ROOT / "solutions", ROOT / "lessons", check=True)
    assert stale == [], f"run `python -m course build-lessons`: {stale}"
    assert [p.name for p in LESSONS] == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("path", SOLUTIONS + LESSONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_conventions(path):
    assert path.stat().st_size < 200_000
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert render(nb) == path.read_text(encoding="utf-8"), "not written by nbformat: re-save it"
    lesson = re.match(r"(\d\d)_", path.name)[1]
    assert nb.metadata["course"]["lesson"] == lesson
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert not any(k.startswith("image/") for k in output.get("data", {})), \
                "image outputs must not be committed"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "google.colab" in code[0].source and REPO_URL in code[0].source
    assert "import" in code[1].source
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "FAST = False" in parameters[0].source
    assert "SEED = " in parameters[0].source
    assert "colab.research.google.com" in nb.cells[0].source  # the Colab badge


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lessons_carry_no_outputs_and_no_solutions(path):
    raw = json.loads(path.read_text())
    for cell in raw["cells"]:
        assert "BEGIN SOLUTION" not in "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("path", SOLUTIONS + LESSONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_link_a_learner_clicks_works_on_colab(path):
    """Colab opens a notebook alone, so a relative link leads nowhere: every link is absolute
    (or an anchor in the same notebook)."""
    cells = nbformat.read(path, as_version=4).cells
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'href="([^"]+)"', text)
    assert [url for url in links if not url.startswith(("https://", "http://", "#"))] == []


@pytest.mark.notebook
def test_store_checked_outputs_keeps_only_the_marked_text_and_no_trace_of_papermill(tmp_path):
    parameters = nbformat.v4.new_code_cell("FAST = False")
    parameters.metadata["tags"] = ["parameters"]
    cells = [parameters,
             nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('fast' if FAST else 'slow')"),
             nbformat.v4.new_code_cell("print('not kept')")]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    path = tmp_path / "00_x.ipynb"
    nbformat.write(notebook, path)
    assert store_checked_outputs(path) == 1
    stored = nbformat.read(path, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in cells]  # nothing injected
    assert stored.cells[1].outputs[0]["text"] == "fast\n"  # run FAST, as the tests run it
    assert stored.cells[1].execution_count == 2
    assert stored.cells[2].outputs == [] and stored.cells[2].execution_count is None
    assert "papermill" not in json.dumps(stored)
