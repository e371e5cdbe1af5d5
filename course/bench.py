"""Speed and memory of what learners run: ``python -m course bench [--quick] [--write-readme]``.

Measured, never asserted: the numbers land in tables (and, with ``--write-readme``, in the
README: speed between the ``bench`` markers, quality between the ``quality`` markers). Timings are
medians of repeated runs on this machine.

- the core maths (``forward_diffusion`` on a training-sized batch),
- one redraw of the lesson 01 widget (what a slider move costs in the kernel),
- every solution notebook executed in FAST mode: wall time and the kernel's peak memory,
- with ``--full``: the notebooks in full mode too, and the slider latency in a real browser;
- with ``--quality`` (or alone, ``--quality-only``): lesson 03's scheduler table on lesson 02's
  bundled model, 256 images a row (its DDPM 1000-step row is the model's own sample quality);
  about 45 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
#: README sections the benchmark rewrites: speed and memory, and sample quality (slow to measure)
SECTIONS = {"speed": "bench", "quality": "quality"}
_PEAK_MARK = "COURSE_PEAK_RSS_KB"
_PEAK_CELL = (
    "import resource, sys\n"
    "_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    f"print('{_PEAK_MARK}', _peak // 1024 if sys.platform == 'darwin' else _peak)"
)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy imports and allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_forward_diffusion(repeats: int) -> dict:
    from .diffusion import forward_diffusion, make_beta_schedule

    betas = make_beta_schedule("linear", 1000)
    x0 = torch.randn(64, 3, 32, 32)
    t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0))
    ms = _median_ms(lambda: forward_diffusion(x0, t, betas), repeats)
    return {"name": "forward_diffusion, batch 64x3x32x32", "value": f"{ms:.2f} ms"}


def bench_widget_redraw(repeats: int) -> dict:
    from .data import load_photo
    from .viz import plots

    photo = load_photo(size=128)
    ms = _median_ms(lambda: plots.figure_to_png(plots.noising_figure(photo, 400)), repeats)
    return {"name": "lesson 01 widget redraw (128 px photo + histogram)", "value": f"{ms:.0f} ms"}


def run_notebook(path: Path, fast: bool, timeout: int = 1800) -> tuple[float, float]:
    """Execute a notebook in a fresh kernel; return (wall seconds, kernel peak RSS in MB)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
    previous = os.environ.get("COURSE_FAST")
    os.environ["COURSE_FAST"] = "1" if fast else "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        start = time.perf_counter()
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop("COURSE_FAST", None)
        else:
            os.environ["COURSE_FAST"] = previous
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    peak_kb = int(re.search(rf"{_PEAK_MARK} (\d+)", text)[1])
    return seconds, peak_kb / 1024


def bench_notebooks(fast: bool) -> list[dict]:
    rows = []
    mode = "FAST" if fast else "full"
    total = 0.0
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        seconds, peak_mb = run_notebook(path, fast=fast)
        total += seconds
        rows.append({"name": f"{path.name} ({mode})",
                     "value": f"{seconds:.1f} s, kernel peak {peak_mb:.0f} MB"})
    rows.append({"name": f"all solution notebooks ({mode})", "value": f"{total:.1f} s"})
    return rows


def bench_browser() -> list[dict]:
    from . import labdriver

    reason = labdriver.browser_unavailable_reason()
    if reason:
        return [{"name": "slider to new image in JupyterLab", "value": f"not measured: {reason}"}]
    result = labdriver.measure_slider_latency(ROOT / "solutions" / "01_forward_noising.ipynb")
    latencies = ", ".join(f"{ms:.0f}" for ms in result["latencies_ms"])
    return [{"name": "slider to new image in JupyterLab (lesson 01)",
             "value": f"median {result['median_ms']:.0f} ms ({latencies})"}]


def bench_quality(n: int = 256) -> list[dict]:
    """Lesson 03's scheduler table on lesson 02's bundled model, ``n`` images per row.

    The last row, DDPM with all 1000 steps, is also the model's own sample quality.
    """
    from .models import load_unet
    from .sampling import compare_schedulers, module_schedulers

    schedulers = module_schedulers()
    rows = compare_schedulers(load_unet("ddpm-shapes"), schedulers, (10, 20, 50), n,
                              reference=("DDPM", 1000))
    return [{"name": f"lesson 02 model: {row['scheduler']}, {row['steps']} steps ({n} images)",
             "value": f"{row['clean']:.1%} clean single shapes, "
                      f"{1000 * row['seconds_per_image']:.1f} ms per image"} for row in rows]


def machine() -> str:
    import os

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}, torch {torch.__version__}")


def to_markdown(rows: list[dict], when: str) -> str:
    lines = [f"Measured {when} on {machine()}.", "", "| what | measured |", "|---|---|"]
    lines += [f"| {r['name']} | {r['value']} |" for r in rows]
    return "\n".join(lines)


def write_readme(table: str, section: str = "speed", readme: Path = ROOT / "README.md") -> None:
    """Replace one benchmark section of the README (between its start and end markers)."""
    start, end = f"<!-- {SECTIONS[section]}:start -->", f"<!-- {SECTIONS[section]}:end -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, FAST notebooks only")
    parser.add_argument("--full", action="store_true",
                        help="also full-mode notebooks and the browser slider latency")
    parser.add_argument("--quality", action="store_true",
                        help="also the sample quality of the bundled model: the scheduler table "
                        "(about 45 min on 2 CPU cores)")
    parser.add_argument("--quality-only", action="store_true", help="only the sample quality")
    parser.add_argument("--json", dest="json_path", help="also write the rows as JSON")
    parser.add_argument("--write-readme", action="store_true",
                        help="update the README's tables for what was measured")
    args = parser.parse_args(argv)

    tables = {}
    if not args.quality_only:
        repeats = 5 if args.quick else 30
        rows = [bench_forward_diffusion(repeats * 4), bench_widget_redraw(repeats)]
        rows += bench_notebooks(fast=True)
        if args.full:
            rows += bench_notebooks(fast=False)
            rows += bench_browser()
        tables["speed"] = rows
    if args.quality or args.quality_only:
        tables["quality"] = bench_quality()
    today = time.strftime("%Y-%m-%d")
    for section, rows in tables.items():
        table = to_markdown(rows, today)
        print(table, end="\n\n")
        if args.write_readme:
            write_readme(table, section)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine(), **tables}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
