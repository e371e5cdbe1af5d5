"""The first process of a sandboxed kernel: fence it in, then become the kernel.

Run as ``python -m course.grading.launch --workdir DIR [limits] -- KERNEL ARGV...``, usually
inside ``unshare --mount --pid --net`` (see :mod:`course.grading.sandbox`). In this order it

1. makes every mount read-only except the working directory, when it has a private mount
   namespace and the right to remount (the grader runs as root),
2. sets the resource limits: address space, CPU seconds, size of any file written,
3. gives up its privileges: the ``nobody`` user when that user can run this Python, else root
   without any capability (so it can neither remount nor kill outside its namespace),
4. replaces itself with the kernel (``exec``), which inherits all of the above.

Nothing here imports torch or the course: it runs before the learner's code and must be small.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys

NOBODY = 65534


def _mount_points() -> list[str]:
    """Every mount point of this mount namespace, parents before children."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            # field 5 is the mount point, with spaces and the like escaped as octal
            point = line.split()[4].encode().decode("unicode_escape")
            points.append(point)
    return sorted(set(points), key=lambda p: (p.count("/"), p))


def make_read_only(keep_writable: list[str]) -> bool:
    """Remount everything read-only but ``keep_writable``; False when not allowed to."""
    mount = shutil.which("mount")
    if mount is None:
        return False

    def run(*args) -> bool:
        return subprocess.run([mount, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    # Private propagation, so that nothing below reaches the grader's mounts.
    if not run("--make-rprivate", "/"):
        return False
    for path in keep_writable:  # a bind mount of its own, remounted writable after the loop
        run("--bind", path, path)
    for point in _mount_points():
        if point not in keep_writable:
            run("-o", "remount,bind,ro", point)
    for path in keep_writable:
        run("-o", "remount,bind,rw", path)
    return True


def set_limits(memory_mb: int, cpu_seconds: int, file_mb: int) -> None:
    """Hard limits that the kernel and everything it starts inherit."""
    if memory_mb > 0:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    if file_mb > 0:
        size = file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def nobody_can_run_python() -> bool:
    """Whether the ``nobody`` user can start this interpreter (a home of 0700 often hides it).

    setpriv resolves the interpreter's path before the new user's rights apply, so this can
    hold while the kernel, once running as ``nobody``, cannot start that interpreter again.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return False
    probe = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", "import ipykernel"]
    return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=60).returncode == 0


def drop_privileges(argv: list[str], workdir: str) -> list[str]:
    """The kernel's command line, prefixed so that it runs without root's powers."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return argv
    fence = [setpriv, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    if nobody_can_run_python():
        os.chown(workdir, NOBODY, NOBODY)
        for root, dirs, files in os.walk(workdir):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), NOBODY, NOBODY)
        fence += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return [*fence, "--", *argv]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m course.grading.launch")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--file-mb", type=int, default=0)
    parser.add_argument("--read-only", action="store_true",
                        help="remount all but the workdir read-only (needs a mount namespace)")
    args = parser.parse_args(argv[:split])
    kernel = argv[split + 1:]
    if args.read_only and os.geteuid() == 0:
        make_read_only([os.path.realpath(args.workdir)])
    command = drop_privileges(kernel, args.workdir)
    set_limits(args.memory_mb, args.cpu_seconds, args.file_mb)
    os.chdir(args.workdir)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
