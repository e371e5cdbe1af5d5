"""Time one sampling run and one lesson under load and under a CPU quota, with and without the
course's thread choice (course/threads.py). Linux, run as root for the quota (cgroup v1 or v2).

    python tools/thread_study.py [--lesson 04_clip_cross_attention] [--repeats 3] [--json out]

Conditions: idle; beside one process that keeps a core busy; inside a cgroup allowed one CPU's
time. "torch" is torch's own thread count (COURSE_THREADS=torch), "choice" the course's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """
import time, torch
from course.device import pick_device
from course.models import load_unet
from course.diffusion import make_beta_schedule
from course.sampling import ddim_sample
pick_device("cpu")
model = load_unet("ddpm-shapes").eval()
noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
betas = make_beta_schedule("linear", 1000)
with torch.no_grad():
    ddim_sample(model, noise[:1], betas, steps=2)
    start = time.perf_counter()
    ddim_sample(model, noise, betas, steps=50)
print(f"{time.perf_counter() - start:.3f} {torch.get_num_threads()}")
"""


@contextlib.contextmanager
def busy(n: int):
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


@contextlib.contextmanager
def one_cpu_quota():
    """A cgroup allowed 100 ms of CPU per 100 ms; yields the shell prefix that enters it."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / "course-thread-study"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")
    else:
        group = Path("/sys/fs/cgroup/course-thread-study")
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text("100000 100000")
    try:
        yield f"echo $$ > {group}/cgroup.procs && exec "
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


def run(command: str, env: dict, prefix: str = "", timeout: float | None = None
        ) -> tuple[float, str]:
    start = time.perf_counter()
    # a session of its own, so that a timeout kills the kernel the command started too
    done = subprocess.run(["bash", "-c", prefix + command], env={**os.environ, **env},
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          start_new_session=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - start, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesson", default="04_clip_cross_attention")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-lesson", action="store_true")
    parser.add_argument("--lesson-timeout", type=float, default=600)
    parser.add_argument("--conditions", default="idle,busy,quota",
                        help="which of idle, busy, quota to measure")
    parser.add_argument("--json")
    parser.add_argument("--run-lesson", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_lesson:
        from course.dev.notebooks import execute_notebook

        seconds = execute_notebook(ROOT / "solutions" / f"{args.run_lesson}.ipynb", fast=False,
                                   timeout=1200)[1]
        print(round(seconds, 1))
        return
    sample = f"{sys.executable} -c '{SAMPLE}'"
    lesson = f"{sys.executable} {Path(__file__).resolve()} --run-lesson {args.lesson}"
    policies = {"torch": {"COURSE_THREADS": "torch"}, "choice": {"COURSE_THREADS": "auto"},
                "torch+passive": {"COURSE_THREADS": "torch", "OMP_WAIT_POLICY": "PASSIVE"}}
    rows = []

    def measure(condition, prefix=""):
        for policy, env in policies.items():
            times, threads = [], None
            for _ in range(args.repeats):
                _, out = run(sample, env, prefix)
                seconds, threads = out.split()
                times.append(float(seconds))
            rows.append({"what": "ddim_sample 50 steps x 8", "condition": condition,
                         "policy": policy, "threads": int(threads), "seconds": sorted(times)})
            print(rows[-1], flush=True)
        if args.skip_lesson:
            return
        for policy in ("torch", "choice"):
            # torch's own threads against course/threads.py's choice, OpenMP's default waits
            try:
                seconds, _ = run(lesson, policies[policy], prefix, timeout=args.lesson_timeout)
                seconds = [round(seconds, 1)]
            except subprocess.TimeoutExpired:
                seconds = f"not done after {args.lesson_timeout} s"
            rows.append({"what": f"lesson {args.lesson} default mode", "condition": condition,
                         "policy": policy, "seconds": seconds})
            print(rows[-1], flush=True)

    chosen = args.conditions.split(",")
    if "idle" in chosen:
        measure("idle")
    if "busy" in chosen:
        with busy(1):
            measure("one busy process")
    if "quota" in chosen:
        with one_cpu_quota() as prefix:
            measure("1-CPU cgroup quota", prefix)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
