"""A kernel the grader can talk to and nothing else can reach past.

The learner's notebook runs in a Jupyter kernel that the grader starts and drives cell by cell
over ZeroMQ (Unix sockets in a folder of the sandbox's own). The kernel is fenced in by
:mod:`course.grading.fence`: a bubblewrap sandbox (its own PID, network and IPC namespaces, the
Python environment read-only, a private size-capped ``/tmp``, no host file it was not given),
running as ``nobody`` when the grader is root, inside a control group that bounds memory,
processes and CPU for the whole tree, and dying with the grader. Besides:

- **Environment.** A handful of variables, none inherited from the grader but ``PATH`` and the
  Python ones.
- **Output.** The kernel's own stdout and stderr go nowhere: a notebook cannot write into the
  grader's console. Cell output reaches the grader only as messages, each at most
  ``Limits.message_mb`` (a larger one is dropped by ZeroMQ before it is read), and only errors
  and answers are kept, their text with control characters escaped.
- **Without bubblewrap** (not installed, or no namespaces allowed) the kernel runs with the
  per-process limits only, orphans are reaped by the grader (``PR_SET_CHILD_SUBREAPER``) and
  killed, and :attr:`KernelSandbox.notes` says so; ``COURSE_REQUIRE_SANDBOX=1`` makes that an
  error instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat.v4 import output_from_msg

from ..checks.status import Status
from . import fence
from .kernel_side import ANSWER_MIME
from .text import printable

#: Variables a kernel gets (their values from the grader's environment when set there).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
_PR_SET_CHILD_SUBREAPER = 36
_OUTPUT_MESSAGES = ("stream", "display_data", "execute_result", "error")


@dataclass(frozen=True)
class Limits:
    """What one notebook may use, for its whole process tree where a cgroup holds it.

    ``memory_mb`` bounds the tree's memory (cgroup) and each process's address space;
    ``file_mb`` the kernel's writable ``/tmp`` (all files together) and any one file;
    ``message_mb`` any one message the grader accepts from the kernel.
    """

    memory_mb: int = 6144
    cpu_seconds: int = 1800
    file_mb: int = 256
    max_processes: int = 64
    cpus: float = 1.0
    message_mb: int = 64
    cell_timeout: float = 120.0  # a lesson cell
    startup_timeout: float = 60.0


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: ``OK``, ``ERROR`` (an exception), ``OUT_OF_MEMORY`` (a
    MemoryError), ``TIMEOUT`` or ``DEAD``; ``error``: the exception as one line; with
    ``keep_outputs``, the cell's outputs as nbformat output dicts; ``answer``: the last answer
    the kernel published during it (a dict, or None)."""

    status: Status
    error: str = ""
    outputs: tuple = ()
    answer: dict | None = None


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children again (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_descendants(keep: int | None = None, timeout: float = 5.0) -> int:
    """Kill every process below this one (but ``keep`` and its own children), until none is
    left; how many were killed."""
    import psutil

    killed = 0
    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while time.monotonic() < deadline:
        spared = set()
        if keep is not None:
            with contextlib.suppress(psutil.Error):
                kept = psutil.Process(keep)
                spared = {keep} | {p.pid for p in kept.children(recursive=True)}
        children = [p for p in me.children(recursive=True) if p.pid not in spared]
        if not children:
            break
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
                killed += 1
        psutil.wait_procs(children, timeout=0.5)
    return killed


_SELFTEST: dict[str, str | None] = {}


def sandbox_problem() -> str | None:
    """Why a bubblewrap sandbox cannot be used here (None: it can); probed once per process."""
    if "result" not in _SELFTEST:
        _SELFTEST["result"] = fence.selftest()
    return _SELFTEST["result"]


class SandboxUnavailable(RuntimeError):
    """``COURSE_REQUIRE_SANDBOX=1`` and no bubblewrap sandbox can start here."""


class KernelSandbox:
    """One sandboxed kernel, restartable; use as a context manager.

    >>> with KernelSandbox(Limits(), env={"COURSE_FAST": "1"}) as box:   # doctest: +SKIP
    ...     box.execute("x = 1", timeout=10).status is Status.OK
    True
    """

    def __init__(self, limits: Limits | None = None, env: dict[str, str] | None = None,
                 fenced: bool = True, cwd: Path | None = None):
        """``fenced=False`` is for the course's own notebooks (benchmark, authoring, tests): a
        plain kernel with the caller's environment, started in ``cwd``, no limits."""
        self.limits = limits or Limits()
        self.extra_env = dict(env or {})
        self.fenced = fenced
        #: what the grade should say about how this kernel was fenced in
        self.notes: list[str] = []
        problem = sandbox_problem() if fenced else None
        self.sandboxed = fenced and problem is None
        if fenced and problem is not None:
            if os.environ.get(fence.REQUIRE_ENV_VAR) == "1" and \
                    os.environ.get(fence.SANDBOX_ENV_VAR) != "off":
                raise SandboxUnavailable(problem)
            self.notes.append(f"the kernel ran without a sandbox ({problem}): only per-process "
                              "limits held")
        if fenced:
            fence.sweep_stale()
        self.workdir = Path(tempfile.mkdtemp(prefix=fence.workdir_prefix()))
        self.layout = fence.Layout(self.workdir)
        self.layout.create()
        self.cwd = Path(cwd) if cwd is not None else None
        self.cgroup = fence.Cgroup()
        if self.sandboxed:
            self.cgroup = fence.Cgroup.create(self.limits.memory_mb, self.limits.max_processes,
                                              self.limits.cpus)
            if self.cgroup.note:
                self.notes.append(self.cgroup.note)
        self._spec_dir = Path(tempfile.mkdtemp(prefix="course-kernelspec-"))
        self._manager = None
        self._client = None
        self._context = None
        if fenced and not self.sandboxed:
            become_subreaper()

    @property
    def inputs(self) -> Path:
        """Where the grader writes files for the kernel (read-only to the kernel)."""
        return self.layout.inputs

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> KernelSandbox:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _kernel_env(self) -> dict[str, str]:
        if not self.fenced:
            return {**os.environ, **self.extra_env}
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        home = fence.SANDBOX_HOME if self.sandboxed else str(self._fallback_home())
        env.update(HOME=home, TMPDIR=home, MPLCONFIGDIR=f"{home}/.matplotlib",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
                   PYTHONDONTWRITEBYTECODE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        env.update(self.extra_env)
        return env

    def _fallback_home(self) -> Path:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        return home

    def _write_kernelspec(self) -> str:
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        argv = [*self._launcher(), *kernel] if self.fenced else kernel
        spec = self._spec_dir / "kernels" / "course-sandbox"
        spec.mkdir(parents=True, exist_ok=True)
        # "message": the interrupt goes to the kernel itself, not to bubblewrap in front of it
        (spec / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": "course sandbox", "language": "python",
            "interrupt_mode": "message" if self.fenced else "signal"}))
        return str(self._spec_dir / "kernels")

    def _launcher(self) -> list[str]:
        """The command that fences the kernel in before it starts (course.grading.fence)."""
        launch = [sys.executable, "-m", "course.grading.launch",
                  "--memory-mb", str(self.limits.memory_mb),
                  "--cpu-seconds", str(self.limits.cpu_seconds),
                  "--file-mb", str(self.limits.file_mb)]
        for path in self.cgroup.paths:
            launch += ["--cgroup", str(path)]
        if not self.cgroup.paths:
            launch += ["--max-processes", str(self.limits.max_processes)]
        launch += ["--"]
        if self.sandboxed:
            launch += fence.bwrap_command(self.layout, self.limits.file_mb)
        return launch

    def start(self) -> None:
        import zmq
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager(kernel_dirs=[self._write_kernelspec()])
        # every socket made from this context drops an incoming message above the cap unread
        self._context = zmq.Context()
        self._context.setsockopt(zmq.MAXMSGSIZE, self.limits.message_mb * 2 ** 20)
        sockets = self.layout.sockets
        fence.lock_sockets(self.layout, locked=False)
        # Unix sockets in a folder the sandbox shares: they work across its empty network
        self._manager = KernelManager(
            kernel_name="course-sandbox", kernel_spec_manager=specs, transport="ipc",
            ip=str(sockets / "kernel"), connection_file=str(sockets / "connection.json"),
            context=self._context)
        self._manager.write_connection_file()  # (once) then readable by the kernel's user
        fence.give_to_kernel(Path(self._manager.connection_file))
        self._start_kernel()

    def _start_kernel(self) -> None:
        devnull = subprocess.DEVNULL
        cwd = str(self.cwd) if self.cwd is not None else (
            fence.SANDBOX_HOME if self.sandboxed else str(self._fallback_home()))
        # bubblewrap changes into the home itself; the launcher starts in the grader's folder
        start_in = str(self.workdir) if self.sandboxed else cwd
        self._manager.start_kernel(cwd=start_in, env=self._kernel_env(), stdout=devnull,
                                   stderr=devnull, stdin=devnull)
        self._client = self._manager.client(context=self._context)
        self._client.start_channels()
        self._client.wait_for_ready(timeout=self.limits.startup_timeout)
        fence.lock_sockets(self.layout, locked=True)

    def restart(self) -> None:
        """A fresh kernel in the same sandbox, after the old one and all it started are gone."""
        self._client.stop_channels()
        self._manager.shutdown_kernel(now=True, restart=True)  # kills the old kernel
        if self.fenced and not self.sandboxed:
            kill_descendants()
        self._clear_sockets()
        fence.lock_sockets(self.layout, locked=False)
        self._start_kernel()

    def _clear_sockets(self) -> None:
        """Remove whatever the old kernel left in its socket folder (links included, never
        followed), but the connection file the grader wrote."""
        folder = self.layout.sockets
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name != "connection.json":
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path, ignore_errors=True)
                        else:
                            os.unlink(entry.path)

    def _kill_kernel(self) -> None:
        """The kernel ignored an interrupt: kill it; :meth:`restart` brings a new one."""
        with contextlib.suppress(Exception):
            self._manager.kill_kernel()

    def _stop_kernel(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop_channels()
        if self._manager is not None:
            with contextlib.suppress(Exception):
                self._manager.shutdown_kernel(now=True)
        if self.fenced and not self.sandboxed:
            kill_descendants()
        self.cgroup.remove()

    def close(self) -> None:
        """Stop the kernel and everything it started; delete the sandbox's files."""
        self._stop_kernel()
        if self._context is not None:
            with contextlib.suppress(Exception):
                self._context.destroy(linger=0)
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self._spec_dir, ignore_errors=True)

    @property
    def alive(self) -> bool:
        return self._manager is not None and self._manager.is_alive()

    # -- running code --------------------------------------------------------------------

    def execute(self, code: str, timeout: float, keep_outputs: bool = False) -> Outcome:
        """Run ``code`` in the kernel; interrupt it after ``timeout`` seconds.

        Output is read and dropped (a notebook may print megabytes) unless ``keep_outputs``; an
        exception is kept as one line, control characters escaped; the last answer published
        (:data:`ANSWER_MIME`) is kept. A kernel that ignores the interrupt is killed and
        reported as ``TIMEOUT``; one that exits is ``DEAD``. Either way the caller restarts
        before going on.
        """
        if not self.alive:
            return Outcome(Status.DEAD, "the kernel was not running")
        msg_id = self._client.execute(code, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        error, ename, interrupted, outputs, answer = "", "", False, [], None
        while True:
            now = time.monotonic()
            if now > deadline:
                if interrupted:  # it ignored the interrupt: a kill is the only way out
                    self._kill_kernel()
                    return Outcome(Status.TIMEOUT, f"no answer within {timeout:g} s, and "
                                   "the interrupt was ignored")
                with contextlib.suppress(Exception):
                    self._manager.interrupt_kernel()
                interrupted, deadline = True, now + 5.0
                error = f"no answer within {timeout:g} s (interrupted)"
            if not self._manager.is_alive():
                return Outcome(Status.DEAD, "the kernel died")
            try:
                message = self._client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message.get("msg_type"), message.get("content", {})
            if kind == "display_data" and isinstance(content.get("data"), dict) and \
                    ANSWER_MIME in content["data"]:
                answer = content["data"][ANSWER_MIME]
                continue
            if keep_outputs and kind in _OUTPUT_MESSAGES:
                outputs.append(output_from_msg(message))
            elif keep_outputs and kind == "clear_output":
                outputs.clear()
            if kind == "error" and not interrupted:
                ename = str(content.get("ename", "?"))
                error = printable(f"{ename}: {str(content.get('evalue', ''))[:300]}")
            elif kind == "status" and content.get("execution_state") == "idle":
                if interrupted:
                    return Outcome(Status.TIMEOUT, error, tuple(outputs))
                status = Status.OK if not error else \
                    Status.OUT_OF_MEMORY if ename == "MemoryError" else Status.ERROR
                return Outcome(status, error, tuple(outputs), answer)
