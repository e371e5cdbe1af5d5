"""Library logs in a lesson: quieter where a notice is about a case the course has already dealt
with (an oracle being built, an adapter whose file was checked), and counted where the notices
are the point (how often diffusers warns about a slip)."""

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


class _Keep(logging.Handler):
    def __init__(self, messages: list[str]):
        super().__init__()
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def collected(logger_name: str = "diffusers") -> Iterator[list[str]]:
    """Inside the block, the named logger's messages are kept in the list it yields instead of
    being printed (to count a library's warnings); its handlers are restored after."""
    logger = logging.getLogger(logger_name)
    messages: list[str] = []
    handlers = logger.handlers
    logger.handlers = [_Keep(messages)]
    try:
        yield messages
    finally:
        logger.handlers = handlers
