"""The walls around a grading kernel: a bubblewrap sandbox and a control group.

:mod:`course.grading.sandbox` starts every learner's kernel through the command built here:

1. ``python -m course.grading.launch`` (outside) puts itself into the sandbox's control group,
   sets per-process resource limits, then ``exec``\\ s
2. ``bwrap`` (`bubblewrap <https://github.com/containers/bubblewrap>`_, Flatpak's sandbox), which
   gives the kernel new PID, IPC, UTS and network namespaces, a new session, no capabilities, and
   a filesystem of its own: the Python environment read-only, a private size-capped ``/tmp``
   (its home and working directory), private ``/run`` and ``/dev/shm``, the grader's inputs
   read-only, and one folder for its Jupyter sockets. Nothing else of the host is mounted: no
   batch folder, no other kernel's files, no host socket. It dies with the grader
   (``--die-with-parent``).
3. As root, bubblewrap runs privileged (no user namespace) and hands over to ``setpriv``, which
   makes the kernel the real unprivileged user ``nobody`` (65534) with no capabilities and
   ``no_new_privs``: files it writes belong to ``nobody``, and a root-only file is closed to it
   even where it is visible. Without root, bubblewrap makes a user namespace and the kernel keeps
   the grader's own uid, but sees only what is mounted.

The control group bounds the whole process tree of one kernel: memory (tmpfs files included),
number of processes, CPU. cgroup v2 is used where the grader may create a group with those
controllers, else v1 (memory, pids, cpu hierarchies); where neither is writable, the grade says
so and only the per-process limits hold.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534
#: Where the kernel's writable tmpfs lives inside the sandbox (also HOME and the cwd).
SANDBOX_TMP = "/tmp"
SANDBOX_HOME = "/tmp/learner"
#: Set to "1" (CI does) to make grading without bubblewrap an error instead of a note.
REQUIRE_ENV_VAR = "COURSE_REQUIRE_SANDBOX"
#: Set to "off" to grade without bubblewrap on purpose (the tests of that fallback do).
SANDBOX_ENV_VAR = "COURSE_SANDBOX"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "course-sandbox-"
#: The few files of /etc that Python, ipykernel and the C library read.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf",
             "/etc/passwd", "/etc/group", "/etc/hosts")


def bwrap() -> str | None:
    """bubblewrap's path, or None when it is not installed."""
    return shutil.which("bwrap")


def is_root() -> bool:
    return os.geteuid() == 0


def python_roots() -> list[str]:
    """Folders the kernel's Python needs, read-only: the interpreter's prefixes, every
    existing ``sys.path`` entry outside them, and the ``course`` package itself (an editable
    install points outside site-packages)."""
    import course

    package = os.path.dirname(os.path.realpath(course.__file__))
    working = os.path.dirname(package)  # the grader's working tree, for an editable install
    candidates = [sys.base_prefix, sys.prefix, sys.exec_prefix,
                  os.path.dirname(os.path.realpath(sys.executable)), package]
    candidates += [p for p in sys.path if p and os.path.isdir(p)]
    real = {os.path.realpath(p) for p in candidates}
    # a folder holding the working tree (the current directory on sys.path) would show every
    # notebook in it: of the working tree, only the package is mounted
    real = {p for p in real if not (working == p or working.startswith(p + "/"))} | {package}
    roots: list[str] = []
    for path in sorted(real, key=len):
        if path in ("/", "") or any(path == r or path.startswith(r + "/") for r in roots):
            continue
        if path.startswith(("/usr/", "/proc", "/sys", "/dev")) or path == "/usr":
            continue  # /usr is mounted whole; the rest never is
        roots.append(path)
    return roots


def _system_mounts() -> list[str]:
    """/usr read-only, and the top-level links or folders a Debian-like system keeps into it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    return args


@dataclass(frozen=True)
class Layout:
    """The grader's folders for one sandbox (all under ``workdir``, which is the grader's).

    ``inputs``: the grader writes case inputs here; the kernel sees it read-only.
    ``sockets``: the kernel's Jupyter sockets and connection file (the kernel binds them).
    """

    workdir: Path

    @property
    def inputs(self) -> Path:
        return self.workdir / "in"

    @property
    def sockets(self) -> Path:
        return self.workdir / "kernel"

    def create(self) -> None:
        os.chmod(self.workdir, 0o711)  # bubblewrap, as nobody, must reach the folders below
        self.inputs.mkdir(mode=0o755)
        self.sockets.mkdir(mode=0o700)


def bwrap_command(layout: Layout | None, tmp_mb: int, shm_mb: int = 64) -> list[str]:
    """bubblewrap's command line up to (not including) the kernel's own command; without a
    layout (a probe), no grader folder is mounted."""
    args = [bwrap(), "--die-with-parent", "--new-session",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            # ipykernel would watch this pid, which does not exist in the kernel's namespace;
            # --die-with-parent does that job
            "--unsetenv", "JPY_PARENT_PID"]
    if is_root():
        # privileged bubblewrap (no user namespace), then setpriv makes the kernel nobody
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"]
    args += _system_mounts()
    roots = python_roots()
    # the folders above each mount, created traversable (bubblewrap makes them 0700)
    above = {str(parent) for root in roots for parent in Path(root).parents
             if str(parent) != "/"}
    for folder in sorted(above, key=len):
        args += ["--perms", "0755", "--dir", folder]
    for root in roots:
        args += ["--ro-bind", root, root]
    args += ["--proc", "/proc", "--dev", "/dev",
             # the kernel's only writable places, in memory, capped (and charged to its cgroup)
             "--perms", "1777", "--size", str(tmp_mb * 2 ** 20), "--tmpfs", SANDBOX_TMP,
             "--perms", "1777", "--size", str(shm_mb * 2 ** 20), "--tmpfs", "/dev/shm",
             "--perms", "0755", "--size", str(2 ** 20), "--tmpfs", "/run",
             "--perms", "0777", "--dir", SANDBOX_HOME, "--chdir", SANDBOX_HOME]
    if layout is not None:
        # the sockets must sit at the same path inside as outside (the connection file names it)
        parents = [p for p in reversed(layout.workdir.parents) if str(p) not in ("/", "/tmp")]
        for folder in [*parents, layout.workdir]:
            args += ["--perms", "0755", "--dir", str(folder)]
        args += ["--ro-bind", str(layout.inputs), str(layout.inputs),
                 "--bind", str(layout.sockets), str(layout.sockets)]
    if is_root():
        args += ["--", shutil.which("setpriv") or "/usr/bin/setpriv",
                 f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    return [*args, "--"]


def lock_sockets(layout: Layout, locked: bool) -> None:
    """As root: while the kernel runs, its socket folder belongs to root, so that the kernel can
    no longer swap a socket for a link to somewhere else on the host (the grader reconnects by
    path). Unlocked, it belongs to nobody, who creates the sockets when a kernel starts."""
    if not is_root():
        return
    owner = 0 if locked else NOBODY
    os.chown(layout.sockets, owner, owner)
    os.chmod(layout.sockets, 0o755 if locked else 0o700)


def give_to_kernel(path: Path) -> None:
    """As root: hand a file the grader wrote (the connection file) to the kernel's user."""
    if is_root():
        os.chown(path, NOBODY, NOBODY)


# --------------------------------------------------------------------------------------------
# Control groups
# --------------------------------------------------------------------------------------------


@dataclass
class Cgroup:
    """One control group (v2) or one group per v1 hierarchy, around one kernel's tree.

    ``paths``: the group folders; the launcher writes its pid into each ``cgroup.procs``.
    ``note``: why there is none, when there is none.
    """

    paths: list[Path] = field(default_factory=list)
    version: int = 0
    note: str = ""

    @classmethod
    def create(cls, memory_mb: int, max_processes: int, cpus: float) -> Cgroup:
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if not is_root():
            return cls(note="no control group: the grader is not root, so only per-process "
                       "limits hold")
        errors = []
        for make in (_make_v2, _make_v1):
            try:
                group = make(name, memory_mb, max_processes, cpus)
            except OSError as error:
                errors.append(f"{make.__name__[-2:]}: {error.strerror or error}")
                continue
            if group is not None:
                return group
        return cls(note="no control group (" + "; ".join(errors or ["none writable"]) +
                   "): only per-process limits hold")

    def remove(self) -> None:
        """Kill whatever is left in the group, then delete it."""
        for path in self.paths:
            _empty_and_remove(path)

    def peak_memory_mb(self) -> float | None:
        for path in self.paths:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                with contextlib.suppress(OSError, ValueError):
                    return int((path / name).read_text()) / 2 ** 20
        return None


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)


def _own_v2_group() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return CGROUP_ROOT / line[3:].lstrip("/")
    return None


def _make_v2(name: str, memory_mb: int, max_processes: int, cpus: float) -> Cgroup | None:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    parent = _own_v2_group()
    if not controllers.exists() or parent is None:
        return None
    if not {"memory", "pids"} <= set((parent / "cgroup.controllers").read_text().split()):
        return None
    wanted = [c for c in ("memory", "pids", "cpu")
              if c in (parent / "cgroup.controllers").read_text().split()]
    _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    group = parent / name
    group.mkdir()
    try:
        _write(group / "memory.max", str(memory_mb * 2 ** 20))
        with contextlib.suppress(OSError):
            _write(group / "memory.swap.max", "0")
        _write(group / "pids.max", str(max_processes))
        if "cpu" in wanted:
            _write(group / "cpu.max", f"{int(cpus * 100_000)} 100000")
    except OSError:
        _empty_and_remove(group)
        raise
    return Cgroup([group], 2)


def _make_v1(name: str, memory_mb: int, max_processes: int, cpus: float) -> Cgroup | None:
    memory, pids, cpu = (CGROUP_ROOT / c for c in ("memory", "pids", "cpu"))
    if not (memory / "cgroup.procs").exists() or not (pids / "cgroup.procs").exists():
        return None
    made: list[Path] = []
    try:
        for hierarchy in (memory, pids) + ((cpu,) if (cpu / "cgroup.procs").exists() else ()):
            (hierarchy / name).mkdir()
            made.append(hierarchy / name)
        limit = str(memory_mb * 2 ** 20)
        _write(memory / name / "memory.limit_in_bytes", limit)
        with contextlib.suppress(OSError):  # swap as well, where swap accounting is on
            _write(memory / name / "memory.memsw.limit_in_bytes", limit)
        _write(pids / name / "pids.max", str(max_processes))
        if cpu / name in made:
            _write(cpu / name / "cpu.cfs_period_us", "100000")
            _write(cpu / name / "cpu.cfs_quota_us", str(int(cpus * 100_000)))
    except OSError:
        for path in made:
            _empty_and_remove(path)
        raise
    return Cgroup(made, 1)


def _members(path: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    return []


def _empty_and_remove(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = _members(path)
        if not members:
            with contextlib.suppress(OSError):
                path.rmdir()
                return
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        time.sleep(0.05)


def workdir_prefix() -> str:
    """The prefix of this grader's sandbox folders: it names the grader's pid, so that a later
    grader can tell the leftovers of a killed one (:func:`sweep_stale`)."""
    return f"{CGROUP_PREFIX}{os.getpid()}-"


def _owner_gone(name: str) -> bool:
    owner = name[len(CGROUP_PREFIX):].split("-")[0]
    return owner.isdigit() and not Path(f"/proc/{owner}").exists()


def sweep_stale() -> int:
    """Remove the sandbox folders and control groups of graders that are gone (killed before
    they could clean up); their kernels died with them (``--die-with-parent``). Returns how
    many were removed."""
    import tempfile

    removed = 0
    with contextlib.suppress(OSError):
        for folder in Path(tempfile.gettempdir()).glob(f"{CGROUP_PREFIX}*"):
            if folder.is_dir() and not folder.is_symlink() and _owner_gone(folder.name):
                shutil.rmtree(folder, ignore_errors=True)  # never follows links
                removed += not folder.exists()
    parents = [CGROUP_ROOT / c for c in ("memory", "pids", "cpu")]
    own = _own_v2_group()
    if own is not None:
        parents.append(own)
    for parent in parents:
        with contextlib.suppress(OSError):
            for group in parent.glob(f"{CGROUP_PREFIX}*"):
                if _owner_gone(group.name):
                    _empty_and_remove(group, timeout=1.0)
                    removed += not group.exists()
    return removed


def selftest() -> str | None:
    """None when a bubblewrap sandbox starts here, else why not (one line)."""
    if os.environ.get(SANDBOX_ENV_VAR) == "off":
        return f"{SANDBOX_ENV_VAR}=off"
    if bwrap() is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    probe = bwrap_command(None, 16)
    try:
        done = subprocess.run([*probe, sys.executable, "-c", "import ipykernel"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"bubblewrap could not start: {error}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return f"bubblewrap could not start a kernel here: {reason[0][:200]}"
    return None
