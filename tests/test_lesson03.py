"""Lesson 03: its checks name the known mistakes and keep the RNG; its notebook keeps the rules."""

import ast
import re

import nbformat
import pytest
import torch

from course import REPO_URL
from course.checks import lesson03
from tests.helpers import LESSONS, SOLUTIONS
from tests.helpers import sample_with_scheduler as right_loop

NOTEBOOKS = [p for p in SOLUTIONS + LESSONS if p.name.startswith("03_")]



def test_every_exercise_has_mistakes_and_tiered_hints():
    for exercise in lesson03.EXERCISES:
        assert len(exercise.mistakes) >= 3, exercise.name
        assert len(exercise.hints) >= 3, exercise.name
    # lessons call check.hint("ddim_step"): each call one tier further, the last the solution
    from course.checks import hint, next_hint, reset_hints

    assert lesson03.hint is hint
    reset_hints("ddim_step")
    tiers = len(lesson03.ddim_step.hints)
    shown = [next_hint("ddim_step") for _ in range(tiers + 1)]
    assert [h.number for h in shown] == [*range(1, tiers + 1), tiers]
    assert [h.is_solution for h in shown[:-2]] == [False] * (tiers - 1)
    assert shown[-1].is_solution and shown[-1].text == shown[-2].text
    reset_hints("ddim_step")


def test_the_checks_leave_the_global_rng_alone():
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    lesson03._ProbeDenoiser()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert lesson03.sample_with_scheduler.run(right_loop, include_hidden=True).passed
    assert torch.equal(torch.random.get_rng_state(), state)


def _markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_links_are_absolute_so_they_work_on_colab(path):
    links = [url for text in _markdown(path) for url in re.findall(r"\]\(([^)\s]+)\)", text)]
    assert links, "the lesson links its sources"
    assert [url for url in links if not url.startswith("https://")] == []
    assert any(url.startswith(f"{REPO_URL}/blob/main/course/") for url in links)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_parameters_cell_holds_only_literals_and_the_text_mentions_hints(path):
    cells = nbformat.read(path, as_version=4).cells
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    for node in ast.parse(parameters[0].source).body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), \
            ast.unparse(node)
    names = {n.targets[0].id for n in ast.parse(parameters[0].source).body}
    assert {"FAST", "FULL_SIZE", "DEVICE", "SEED"} <= names
    text = "\n".join(_markdown(path))
    assert 'check.hint("ddim_step")' in text and 'check.hint("sample_with_scheduler")' in text
    assert "trained by the very same loss" not in text


def test_collected_keeps_a_loggers_messages_and_restores_its_handlers():
    import logging

    from course.logs import collected

    logger = logging.getLogger("diffusers")
    handlers, level = list(logger.handlers), logger.level
    logger.setLevel(logging.WARNING)  # diffusers' default verbosity
    with collected("diffusers") as messages:
        logging.getLogger("diffusers.schedulers").warning("the model input was not scaled")
        logger.warning("twice: %d", 2)
    assert messages == ["the model input was not scaled", "twice: 2"]
    assert logger.handlers == handlers
    with pytest.raises(RuntimeError), collected("diffusers"):
        raise RuntimeError("inside")
    assert logger.handlers == handlers
    logger.setLevel(level)
