"""Compute the views a learner is likely to ask for next, while they look at the current one.

A widget whose every new view costs a sampling run (lesson 03's DDIM sliders: one U-Net call per
step) cannot answer a slider move within a second on a laptop CPU. But between two moves the
learner reads the picture, and the CPU idles. ``Prefetcher`` spends that idle time on the views
one move away, on a single background thread, so that the usual move is a cache hit.

Rules that keep it safe in a learner's kernel:

* one worker thread, at the lowest CPU priority on Linux (``nice`` 19, which the threads torch
  starts from it inherit): the guesses run on time nothing else wants;
* every call to ``get`` drops the queued guesses (the learner has moved; they are stale) before it
  computes, so a miss waits for at most the one view the worker is on;
* an exception in the background is not cached: ``get`` computes that view again in the
  foreground, where the error reaches the learner as usual;
* the thread is a daemon: it never keeps a kernel from shutting down.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class Prefetcher:
    """A cache of ``compute(*key)`` results, filled on demand (``get``) and ahead (``prefetch``)."""

    def __init__(self, compute: Callable[..., Any], cache_size: int = 64):
        self._compute = compute
        self._cache_size = cache_size
        self._done: OrderedDict[Hashable, Any] = OrderedDict()
        self._queue: list[tuple] = []
        self._running: tuple | None = None  # the key the worker is computing now
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None

    def get(self, key: tuple) -> Any:
        """``compute(*key)``, from the cache, from the worker if it is on it, or computed now."""
        with self._changed:
            self._queue.clear()
            while self._running == key:  # already half done in the background: wait for it
                self._changed.wait()
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
        result = self._compute(*key)  # outside the lock: the worker may finish its view meanwhile
        with self._changed:
            self._store(key, result)
        return result

    def prefetch(self, keys: Iterable[tuple]) -> None:
        """Replace the queue with ``keys`` (most likely first), skipping those already cached."""
        with self._changed:
            self._queue = [key for key in dict.fromkeys(keys)
                           if key not in self._done and key != self._running]
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="course-prefetch",
                                                daemon=True)
                self._worker.start()
            self._changed.notify_all()

    def cached(self, key: tuple) -> bool:
        with self._changed:
            return key in self._done

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and the worker rests (tests and benchmarks use this)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and self._running is None,
                                          timeout)

    def _store(self, key: tuple, result: Any) -> None:
        self._done[key] = result
        self._done.move_to_end(key)
        while len(self._done) > self._cache_size:
            self._done.popitem(last=False)  # the least recently used

    def _work(self) -> None:
        if sys.platform == "linux":  # there a thread id names one thread; elsewhere, a process
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass  # a sandbox may forbid it: run at the usual priority
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue)
                key = self._running = self._queue.pop(0)
            try:
                result, failed = self._compute(*key), False
            except Exception:  # the foreground recomputes it and shows the error there
                result, failed = None, True
            with self._changed:
                if not failed:
                    self._store(key, result)
                self._running = None
                self._changed.notify_all()
