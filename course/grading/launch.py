"""The first process of a grading kernel: join its control group, set its limits, become it.

Run as ``python -m course.grading.launch [--cgroup DIR]... [limits] -- COMMAND...``, where
COMMAND is bubblewrap's command line ending in the kernel's (see :mod:`course.grading.fence`).
It

1. writes its own pid into each ``DIR/cgroup.procs``, so that bubblewrap, the kernel and all it
   ever starts are counted together (a cgroup must be joined before the first fork),
2. sets the per-process limits every descendant inherits: address space, CPU seconds, size of
   any one file, no core dumps, and, only where there is no control group, a process count,
3. replaces itself with COMMAND (``exec``).

Nothing here imports torch or the course: it runs before the learner's code and must be small.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))


def set_limits(memory_mb: int, cpu_seconds: int, file_mb: int, max_processes: int) -> None:
    """Hard limits that the kernel and everything it starts inherit (0: none)."""
    if memory_mb > 0:
        size = memory_mb * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    if file_mb > 0:
        size = file_mb * 2 ** 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    if max_processes > 0:  # counts every process of the user: a fallback, not a fence
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m course.grading.launch")
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--file-mb", type=int, default=0)
    parser.add_argument("--max-processes", type=int, default=0)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    join_cgroups(args.cgroup)
    set_limits(args.memory_mb, args.cpu_seconds, args.file_mb, args.max_processes)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
