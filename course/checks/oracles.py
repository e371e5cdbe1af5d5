"""What several lessons' oracles share: the bundled tiny pipeline, and diffusers kept quiet."""

from __future__ import annotations

import contextlib
import functools

import torch


def diffusers_quiet() -> contextlib.AbstractContextManager[None]:
    """Silence diffusers' warnings and notices while a check builds an oracle or replays a known
    mistake: they must not print into the learner's lesson."""
    from ..logs import only_errors

    return only_errors("diffusers")


@functools.lru_cache(maxsize=1)
def bundled_tiny_pipeline():
    """The bundled tiny StableDiffusionPipeline on the CPU in float32, loaded once per process.

    The oracles' own, never changed: a case whose inputs hold its modules reaches the learner's
    function only through :func:`~course.checks.cases.clone_inputs`, which copies them, and a
    check that needs another scheduler builds a new pipeline (or a deep copy) around them."""
    from ..models import load_pipeline

    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe
