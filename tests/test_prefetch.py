"""The background cache behind the slow widgets: it computes each view once, never shows a stale or
failed one, and gives way to the learner's own request."""

import os
import sys
import threading

import pytest

from course.viz.prefetch import Prefetcher


class Recorder:
    """``compute(key) -> key * 10``, recording each call and the thread it ran on."""

    def __init__(self):
        self.calls: list[tuple[int, str]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, key):
        self.calls.append((key, threading.current_thread().name))
        self.started.set()
        self.release.wait(timeout=30)
        if key < 0:
            raise ValueError(f"no view for {key}")
        return key * 10


def test_prefetched_views_are_computed_once_in_the_background():
    compute = Recorder()
    cache = Prefetcher(compute)
    assert cache.get((1,)) == 10 and compute.calls == [(1, "MainThread")]
    cache.prefetch([(2,), (3,), (1,), (2,)])  # duplicates and cached views are skipped
    assert cache.wait_idle(timeout=30)
    assert compute.calls[1:] == [(2, "course-prefetch"), (3, "course-prefetch")]
    assert cache.get((3,)) == 30 and cache.get((2,)) == 20 and len(compute.calls) == 3


def test_a_view_the_worker_is_on_is_waited_for_not_computed_twice():
    compute = Recorder()
    cache = Prefetcher(compute)
    compute.release.clear()  # the worker blocks inside compute(5)
    cache.prefetch([(5,), (6,)])
    assert compute.started.wait(timeout=30)
    threading.Timer(0.2, compute.release.set).start()
    assert cache.get((5,)) == 50  # waits for the worker's result
    assert [key for key, _ in compute.calls] == [5]  # (6,) was dropped: the learner moved on
    assert cache.wait_idle(timeout=30) and not cache.cached((6,))


def test_a_background_failure_is_not_cached_and_reaches_the_learner():
    compute = Recorder()
    cache = Prefetcher(compute)
    cache.prefetch([(-1,)])
    assert cache.wait_idle(timeout=30) and not cache.cached((-1,))
    with pytest.raises(ValueError, match="no view for -1"):
        cache.get((-1,))
    assert [name for _, name in compute.calls] == ["course-prefetch", "MainThread"]


def test_the_cache_keeps_the_most_recently_used_views():
    threads = threading.active_count()
    compute = Recorder()
    cache = Prefetcher(compute, cache_size=2)
    cache.get((1,))
    cache.get((2,))
    cache.get((1,))  # 1 is now the most recent
    cache.get((3,))  # pushes out 2
    assert cache.cached((1,)) and cache.cached((3,)) and not cache.cached((2,))
    assert threading.active_count() == threads  # a cache that never prefetches starts no thread


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_the_worker_runs_at_the_lowest_priority_and_the_caller_keeps_its_own():
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def compute(key):
        seen[threading.current_thread().name] = os.getpriority(os.PRIO_PROCESS,
                                                               threading.get_native_id())
        return key

    cache = Prefetcher(compute)
    cache.prefetch([(1,)])
    assert cache.wait_idle(timeout=30)
    cache.get((2,))
    assert seen == {"course-prefetch": 19, "MainThread": own}
