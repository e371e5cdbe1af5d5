"""Numbers in lesson prose: a measured figure is one the learner's own run prints, or it says
where it comes from.

A decimal percentage in a markdown paragraph ("48.2%") reads as a measurement. Its paragraph must
point at what the run prints ("printed above", "this run") or name its source ("shipped": a table
that ships with the course, with its device and date; "chance": arithmetic, not a measurement).
Figures that are exact arithmetic on a schedule or a config are listed below with the reason.
"""

import re

import nbformat
import pytest

from tests.helpers import ROOT

SOURCES = ("printed above", "printed below", "this run", "shipped", "chance")
#: (lesson, figure): why it is not a measurement
COMPUTED = {
    ("01", "6.8%"): "sqrt(alpha_bar) of SD's scaled-linear schedule at its last step: arithmetic",
    ("01", "0.6%"): "the same quantity for another schedule: arithmetic",
    ("01", "2.7%"): "the same quantity for another schedule: arithmetic",
    ("07", "0.09%"): "LoRA's share of SD 1.5's U-Net, counted from its config (exercise 3)",
    ("07", "0.1%"): "the module's own claim, quoted to be tested",
}
DECIMAL_PERCENT = re.compile(r"\d+\.\d+\s?%")


def _paragraphs(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            yield from re.split(r"\n\s*\n", cell.source)


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_measured_figure_in_prose_is_printed_or_sourced(path):
    lesson = path.name[:2]
    unsourced = []
    for paragraph in _paragraphs(path):
        figures = [f.replace(" ", "") for f in DECIMAL_PERCENT.findall(paragraph)]
        figures = [f for f in figures if (lesson, f) not in COMPUTED]
        if figures and not any(word in paragraph.lower() for word in SOURCES):
            unsourced.append(f"{', '.join(figures)} in: {paragraph[:120]!r}")
    assert not unsourced, "\n".join(unsourced)


def test_the_rule_catches_a_bare_default_run_figure(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "In the default CPU run the slip cost 48.2% against 89.8%.")])
    path = tmp_path / "04_x.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(AssertionError, match="48.2%"):
        test_every_measured_figure_in_prose_is_printed_or_sourced(path)
