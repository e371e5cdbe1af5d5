"""A kernel the grader can talk to and nothing else can reach past.

The learner's notebook runs in a Jupyter kernel that the grader starts and drives cell by cell
over ZeroMQ (Unix sockets in the sandbox's own directory). Around that kernel:

- **Processes.** With root (CI, a grading container) the kernel gets its own PID namespace
  (``unshare --pid --kill-child``): when the sandbox closes, every process the notebook
  started, detached ones included, dies with it. Without root, the grader makes itself a
  child subreaper (``PR_SET_CHILD_SUBREAPER``), so orphans come back to it and are killed.
- **Files.** The kernel's working directory and ``HOME`` is a fresh temporary directory; with a
  mount namespace everything else is remounted read-only, and the kernel runs as ``nobody``
  or as a root without capabilities (:mod:`course.grading.launch`).
- **Network.** With root the kernel has a network namespace of its own: no network at all.
- **Resources.** Address-space, CPU-time and file-size limits (``setrlimit``).
- **Environment.** A handful of variables, none inherited from the grader but ``PATH``.
- **Output.** The kernel's own stdout and stderr go nowhere: a notebook cannot write into the
  grader's console. Cell output reaches the grader only as messages, and only errors are kept.
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

#: Variables a kernel gets (their values from the grader's environment when set there).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
_PR_SET_CHILD_SUBREAPER = 36
_OUTPUT_MESSAGES = ("stream", "display_data", "execute_result", "error")


@dataclass(frozen=True)
class Limits:
    """What one notebook may use. ``memory_mb`` bounds the kernel's address space."""

    memory_mb: int = 6144
    cpu_seconds: int = 1800
    file_mb: int = 256
    cell_timeout: float = 120.0  # a lesson cell
    startup_timeout: float = 60.0


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: ``ok``, ``error`` (an exception), ``timeout`` or ``dead``;
    with ``keep_outputs``, the cell's outputs as nbformat output dicts."""

    status: str
    error: str = ""
    outputs: tuple = ()


#: Set to "0" to grade without namespaces even as root (the path a non-root grader takes).
NAMESPACES_ENV_VAR = "COURSE_SANDBOX_NAMESPACES"


def namespaces_available() -> bool:
    """True when ``unshare`` can give a kernel its own PID, mount and network namespaces."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or os.environ.get(NAMESPACES_ENV_VAR) == "0":
        return False
    probe = [unshare, "--mount", "--pid", "--net", "--fork", "--kill-child", "true"]
    try:
        return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


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


class KernelSandbox:
    """One sandboxed kernel, restartable; use as a context manager.

    >>> with KernelSandbox(Limits(), env={"COURSE_FAST": "1"}) as box:   # doctest: +SKIP
    ...     box.execute("x = 1", timeout=10).status
    'ok'
    """

    def __init__(self, limits: Limits | None = None, env: dict[str, str] | None = None,
                 fenced: bool = True, cwd: Path | None = None):
        """``fenced=False`` is for the course's own notebooks (benchmark, authoring, tests): a
        plain kernel with the caller's environment, started in ``cwd``, no limits."""
        self.limits = limits or Limits()
        self.extra_env = dict(env or {})
        self.fenced = fenced
        self.isolated = fenced and namespaces_available()
        self.workdir = Path(tempfile.mkdtemp(prefix="course-sandbox-"))
        self.cwd = Path(cwd) if cwd is not None else self.workdir
        #: Where the grader and the kernel hand each other files. Made before the kernel starts,
        #: so that the launcher gives it to the kernel's user.
        self.exchange = self.workdir / "exchange"
        self.exchange.mkdir()
        self._spec_dir = Path(tempfile.mkdtemp(prefix="course-kernelspec-"))
        self._manager = None
        self._client = None
        if fenced and not self.isolated:
            become_subreaper()

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
        home = str(self.workdir)
        env.update(HOME=home, TMPDIR=home, MPLCONFIGDIR=f"{home}/.matplotlib",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
                   PYTHONDONTWRITEBYTECODE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        env.update(self.extra_env)
        return env

    def _write_kernelspec(self) -> str:
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        argv = [*self._launcher(), "--", *kernel] if self.fenced else kernel
        spec = self._spec_dir / "kernels" / "course-sandbox"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": "course sandbox", "language": "python",
            "interrupt_mode": "signal"}))
        return str(self._spec_dir / "kernels")

    def _launcher(self) -> list[str]:
        """The command that fences the kernel in before it starts (see course.grading.launch)."""
        launch = [sys.executable, "-m", "course.grading.launch", "--workdir", str(self.workdir),
                  "--memory-mb", str(self.limits.memory_mb),
                  "--cpu-seconds", str(self.limits.cpu_seconds),
                  "--file-mb", str(self.limits.file_mb)]
        if self.isolated:
            launch = [shutil.which("unshare"), "--mount", "--pid", "--net", "--fork",
                      "--kill-child", "--mount-proc", "--", *launch, "--read-only"]
        return launch

    def start(self) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager(kernel_dirs=[self._write_kernelspec()])
        # Unix sockets in the workdir: they work across the kernel's empty network namespace.
        self._manager = KernelManager(
            kernel_name="course-sandbox", kernel_spec_manager=specs, transport="ipc",
            ip=str(self.workdir / ".kernel"),
            connection_file=str(self.workdir / ".kernel-connection.json"))
        self._start_kernel()

    def _start_kernel(self) -> None:
        devnull = subprocess.DEVNULL
        self._manager.start_kernel(cwd=str(self.cwd), env=self._kernel_env(),
                                   stdout=devnull, stderr=devnull, stdin=devnull)
        self._client = self._manager.client()
        self._client.start_channels()
        self._client.wait_for_ready(timeout=self.limits.startup_timeout)

    def restart(self) -> None:
        """A fresh kernel in the same sandbox, after the old one and all it started are gone."""
        self._client.stop_channels()
        self._manager.restart_kernel(now=True)  # kills the old kernel (and its namespace)
        if self.fenced and not self.isolated:
            kill_descendants(keep=self._manager.provisioner.process.pid)
        self._client = self._manager.client()
        self._client.start_channels()
        self._client.wait_for_ready(timeout=self.limits.startup_timeout)

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
        if self.fenced and not self.isolated:
            kill_descendants()

    def close(self) -> None:
        """Stop the kernel and everything it started; delete the sandbox's files."""
        self._stop_kernel()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self._spec_dir, ignore_errors=True)

    @property
    def alive(self) -> bool:
        return self._manager is not None and self._manager.is_alive()

    # -- running code --------------------------------------------------------------------

    def execute(self, code: str, timeout: float, keep_outputs: bool = False) -> Outcome:
        """Run ``code`` in the kernel; interrupt it after ``timeout`` seconds.

        Output is read and dropped (a notebook may print megabytes) unless ``keep_outputs``; an
        exception is kept as one line. A kernel that ignores the interrupt is killed and
        reported as ``timeout``; one that exits is ``dead``. Either way the caller restarts
        before going on.
        """
        if not self.alive:
            return Outcome("dead", "the kernel was not running")
        msg_id = self._client.execute(code, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        error, interrupted, outputs = "", False, []
        while True:
            now = time.monotonic()
            if now > deadline:
                if interrupted:  # it ignored the interrupt: a kill is the only way out
                    self._kill_kernel()
                    return Outcome("timeout", f"no answer within {timeout:g} s, and the "
                                   "interrupt was ignored")
                self._manager.interrupt_kernel()
                interrupted, deadline = True, now + 5.0
                error = f"no answer within {timeout:g} s (interrupted)"
            if not self._manager.is_alive():
                return Outcome("dead", "the kernel died")
            try:
                message = self._client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message.get("msg_type"), message.get("content", {})
            if keep_outputs and kind in _OUTPUT_MESSAGES:
                outputs.append(output_from_msg(message))
            elif keep_outputs and kind == "clear_output":
                outputs.clear()
            if kind == "error" and not interrupted:
                error = f"{content.get('ename', '?')}: {str(content.get('evalue', ''))[:300]}"
            elif kind == "status" and content.get("execution_state") == "idle":
                if interrupted:
                    return Outcome("timeout", error, tuple(outputs))
                return Outcome("error" if error else "ok", error, tuple(outputs))
