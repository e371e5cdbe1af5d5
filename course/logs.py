"""Quieter libraries: a library's notices about a case the course has already dealt with (an
oracle being built, an adapter whose file was checked) do not belong in a learner's lesson."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def only_errors(logger_name: str = "diffusers") -> Iterator[None]:
    """Inside the block, the named logger shows errors only; its level is restored after."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
