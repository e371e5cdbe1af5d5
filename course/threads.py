"""How many CPU threads torch should use: the CPUs this process really has, minus the busy ones.

torch starts one thread per CPU it can see, and its OpenMP threads spin while they wait for each
other. That is fastest on an idle machine that is all yours, and slow everywhere else:

* a container, Binder or Colab gives a *share* of a large host (a cgroup quota: ``cpu.max`` says
  "200000 100000", two CPUs' worth of time), yet ``os.cpu_count()`` reports every host core, so
  torch starts dozens of threads that queue for two CPUs;
* on a learner's laptop a browser or a second notebook keeps a core busy, and a thread that lands
  on that core makes every other thread wait for it at each parallel step.

So the course counts the CPUs it may use (the cgroup quota, then the affinity mask), samples for a
moment how many of them other processes keep busy, and gives torch the rest: at least one thread.
``COURSE_THREADS`` overrides the choice: a number, or ``torch`` for torch's own default; so does
``OMP_NUM_THREADS`` when it is set and ``COURSE_THREADS`` is not.
``python -m course doctor`` prints what was chosen and why.

Spinning is why the count matters so much. torch's OpenMP threads spin while they wait for each
other, so a thread whose core is taken holds every other one back at each parallel step. Measured
on a 2-core machine beside one process that keeps a core busy (``tools/thread_study.py``, lesson
02's model, ``ddim_sample`` of 8 images in 50 steps, median of 3): torch's 2 threads 8.9 s,
the course's choice (1 thread) 3.4 s, 2 threads told to sleep while they wait
(``OMP_WAIT_POLICY=PASSIVE``) 3.5 s; idle, 2.0 s, 1.9 s and 2.6 s. Sleeping waits cost a third
on an idle machine (lesson 04 ran 73 s instead of 44 s), so the course does not ask for them:
with no more threads than free CPUs, nobody waits for a busy core.

The thread count also changes the last bits of some results: a sample of lesson 02's model
differs by up to 5e-6 between 1 and 2 threads. ``COURSE_THREADS=N`` pins it for bitwise repeats
across machines and loads.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

#: ``COURSE_THREADS``: unset or "auto" (choose), a positive integer, or "torch" (leave torch alone).
THREADS_ENV_VAR = "COURSE_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int          # what torch.set_num_threads was given (or torch's own count)
    visible: int          # os.cpu_count(): what torch would assume
    quota: float | None   # CPUs' worth of time the cgroup allows; None when unlimited
    affinity: int         # CPUs this process may be scheduled on
    busy: float           # of those, how many other processes kept busy while we sampled
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} ({self.reason})"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """CPUs' worth of time this process's cgroup (or a parent) allows per period; None if unlimited.

    cgroup v2 writes ``cpu.max`` as "<quota> <period>" or "max <period>"; v1 writes
    ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``. Limits nest, so the smallest on the
    path from this process's group up to the root is the one that binds.
    """
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            membership = ""
    quotas = []
    for line in membership.splitlines():
        _, controllers, group = line.split(":", 2)
        if controllers == "":  # v2, the unified hierarchy
            folders, read = [root], _v2_quota
        elif "cpu" in controllers.split(","):
            folders, read = [root / "cpu", root / "cpu,cpuacct"], _v1_quota
        else:
            continue
        for base in folders:
            here = base / group.lstrip("/")
            # In a container the group path names the host's hierarchy; only the root is mounted.
            for folder in [here, *here.parents]:
                if folder == base.parent:
                    break
                quota = read(folder)
                if quota is not None:
                    quotas.append(quota)
    return min(quotas) if quotas else None


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


def affinity_cpus() -> set[int]:
    """The CPU numbers this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cpu_times(cpus: set[int], stat: Path) -> tuple[float, float]:
    """(busy, total) jiffies summed over ``cpus``, from /proc/stat's per-CPU lines."""
    busy = total = 0.0
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        total += sum(values)
        busy += sum(values) - idle
    return busy, total


def busy_cpus(cpus: set[int], seconds: float = 0.25, stat: Path = Path("/proc/stat")) -> float:
    """How many of ``cpus`` other processes keep busy, sampled over ``seconds`` while we sleep.

    busy CPUs = len(cpus) * (busy jiffies / all jiffies) over the window. 0.0 where /proc/stat is
    missing (macOS, Windows): then the quota and affinity alone decide.
    """
    try:
        busy_before, total_before = _cpu_times(cpus, stat)
        time.sleep(seconds)
        busy_after, total_after = _cpu_times(cpus, stat)
    except OSError:
        return 0.0
    elapsed = total_after - total_before
    return 0.0 if elapsed <= 0 else len(cpus) * (busy_after - busy_before) / elapsed


def choose_threads(quota: float | None, affinity: int, busy: float) -> int:
    """Threads for torch: the CPUs we may use, but no more than the CPUs nobody else is using.

    threads = min(floor(quota), affinity, affinity - round(busy)), at least one. A CPU counts as
    taken once others keep it busy over half of the time (busy is rounded): a torch thread that
    shares a core holds back every other thread at each parallel step. On a share of a large host
    the quota binds, and the host's load only matters once few of its CPUs are idle.
    """
    usable = affinity if quota is None else min(affinity, max(1, math.floor(quota)))
    idle = affinity - round(busy)
    return max(1, min(usable, idle))


def thread_choice(sample_seconds: float = 0.25) -> ThreadChoice:
    """Work out (without applying it) the thread count ``use_available_cpus`` would set."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota()
    visible = os.cpu_count() or len(cpus)
    setting = os.environ.get(THREADS_ENV_VAR, "auto").strip().lower()
    if setting == "torch":
        return ThreadChoice(torch.get_num_threads(), visible, quota, len(cpus), 0.0,
                            f"{THREADS_ENV_VAR}=torch: torch's own default")
    if setting not in ("", "auto"):
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"{THREADS_ENV_VAR}={setting!r}: expected a positive whole number, "
                             f"'auto' or 'torch'")
        return ThreadChoice(int(setting), visible, quota, len(cpus), 0.0,
                            f"{THREADS_ENV_VAR}={setting}")
    if setting in ("", "auto") and os.environ.get("OMP_NUM_THREADS", "").strip():
        # Whoever started this process chose already (the grader gives each kernel one thread).
        return ThreadChoice(torch.get_num_threads(), visible, quota, len(cpus), 0.0,
                            f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS'].strip()} was set")
    busy = busy_cpus(cpus, sample_seconds)
    threads = choose_threads(quota, len(cpus), busy)
    limit = f"quota {quota:g} CPUs" if quota is not None else "no CPU quota"
    return ThreadChoice(threads, visible, quota, len(cpus), busy,
                        f"{limit}, {len(cpus)} CPUs in the affinity mask, "
                        f"{busy:.1f} kept busy by other processes")


_applied: ThreadChoice | None = None


def use_available_cpus(refresh: bool = False) -> ThreadChoice:
    """Set torch's thread count from :func:`thread_choice`, once per process unless ``refresh``."""
    global _applied
    if _applied is None or refresh:
        choice = thread_choice()
        if torch.get_num_threads() != choice.threads:
            torch.set_num_threads(choice.threads)
        _applied = choice
    return _applied
