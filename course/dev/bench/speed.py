"""Timings of what learners run: the core maths, widget updates in the kernel, every solution
notebook (FAST and the learner's default mode) with its peak memory, and the browser slider.

Each function returns rows ``{"name", "value"}`` (what the README table prints) with the raw
numbers beside them (``kind``, and ``ms``, or ``seconds`` and ``peak_mb``), which the report
plots. Timings are medians of repeated runs on this machine.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch

from .readme import ROOT

_PEAK_MARK = "COURSE_PEAK_RSS_KB"
_GPU_MARK = "COURSE_PEAK_GPU_MB"
_PEAK_CELL = (
    "import resource, sys\n"
    "_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    f"print('{_PEAK_MARK}', _peak // 1024 if sys.platform == 'darwin' else _peak)\n"
    "_torch = sys.modules.get('torch')\n"
    "if _torch is not None and _torch.cuda.is_available() and _torch.cuda.is_initialized():\n"
    f"    print('{_GPU_MARK}', _torch.cuda.max_memory_allocated() // 2**20)"
)
#: What a learner's "Run All" is called in the tables: FAST is for tests, default is the lesson.
MODES = {True: "FAST", False: "default"}


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy imports and allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _ms_row(name: str, ms: float, kind: str, digits: int = 0) -> dict:
    return {"name": name, "value": f"{ms:.{digits}f} ms", "kind": kind, "ms": round(ms, 3)}


def bench_forward_diffusion(repeats: int) -> dict:
    from ...diffusion import forward_diffusion, make_beta_schedule

    betas = make_beta_schedule("linear", 1000)
    x0 = torch.randn(64, 3, 32, 32)
    t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0))
    ms = _median_ms(lambda: forward_diffusion(x0, t, betas), repeats)
    return _ms_row("forward_diffusion, batch 64x3x32x32", ms, "maths", digits=2)


def bench_widget_redraw(repeats: int) -> dict:
    from ...data import load_photo
    from ...viz import plots

    photo = load_photo(size=128)
    ms = _median_ms(lambda: plots.figure_to_png(plots.noising_figure(photo, 400)), repeats)
    return _ms_row("lesson 01 widget redraw (128 px photo + histogram)", ms, "widget")


def bench_guidance_update(repeats: int) -> dict:
    """What one move of lesson 05's guidance slider costs in the kernel: sample, draw, encode."""
    from ...models import load_pipeline
    from ...tinysd.guided import guided_sample
    from ...viz import plots
    from ...viz.guidance import guidance_figure

    pipe = load_pipeline("tiny-shapes")
    prompt, steps = "a red circle on the left", 10  # the widget's default step count

    def update():
        image = guided_sample(pipe, [prompt], 7.5, steps, seed=0)[0]
        plots.figure_to_png(guidance_figure(image, prompt, 7.5, steps=steps))

    update()  # the first call pays for lazy imports and allocations
    ms = _median_ms(update, repeats)
    return _ms_row(f"lesson 05 guidance widget update (tiny SD, {steps} steps, w = 7.5)", ms,
                   "widget")


def bench_adapter_update(repeats: int) -> dict:
    """What one move of lesson 07's strength sliders costs in the kernel: set both adapters'
    strengths, sample the widget's three images, judge and draw them."""
    from ...lora import load_adapter, set_adapter_strengths
    from ...models import load_pipeline
    from ...tinysd.evaluate import generate
    from ...viz import plots
    from ...viz.lora import adapter_figure

    pipe = load_pipeline("tiny-shapes", device="cpu")
    for name in ("purple", "outline"):
        load_adapter(pipe, name, adapter_name=name)
    prompt, steps, strengths = "a purple triangle at the top", 15, {"purple": 1.0, "outline": 0.5}

    def update():
        set_adapter_strengths(pipe, strengths)
        images = generate(pipe, [prompt] * 3, 1.0, steps, seed=0)
        plots.figure_to_png(adapter_figure(images, prompt, strengths))

    update()
    ms = _median_ms(update, repeats)
    return _ms_row(f"lesson 07 adapter widget update (2 adapters, 3 images, {steps} steps)", ms,
                   "widget")


def bench_ddim_update(repeats: int, new_view_steps=(20, 100), moves: int = 10,
                      widget_steps: int = 20) -> list[dict]:
    """Lesson 03's DDIM widget, the costliest view to make: eight images sampled from scratch at
    the widget's default 20 steps and at its 100-step end, and a move to a view the widget had
    sampled in the background while the learner looked (``course.viz.prefetch``)."""
    from ...diffusion import make_beta_schedule
    from ...metrics import sample_quality
    from ...models import load_unet
    from ...sampling import ddim_sample
    from ...viz import plots
    from ...viz.widgets import ddim_widget

    model, betas = load_unet("ddpm-shapes"), make_beta_schedule("linear", 1000)
    start_noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def sample(eta, steps):  # the lesson's sample_for_widget
        images = ddim_sample(model, start_noise, betas, steps=steps, eta=eta,
                             generator=torch.Generator().manual_seed(0))
        return images, f"eta={eta:.1f}, {steps} steps: {sample_quality(images)['clean']:.0%} clean"

    def new_view(steps):  # what the widget does on a move it did not foresee
        images, title = sample(0.5, steps)
        plots.figure_to_png(plots.image_grid(images, suptitle=title))

    rows = []
    for steps in new_view_steps:
        ms = _median_ms(lambda steps=steps: new_view(steps), max(3, repeats // 10))
        rows.append(_ms_row(f"lesson 03 DDIM widget, a new view ({steps} steps, 8 images)", ms,
                            "widget"))
    widget = ddim_widget(sample, eta=0.0, steps=widget_steps)
    eta = widget.children[0].children[0]
    move_ms = []
    for notch in range(1, moves + 1):  # eta 0.1, 0.2, ..., each after the prefetch has finished
        widget.samples.wait_idle()
        start = time.perf_counter()
        eta.value = notch / 10
        move_ms.append((time.perf_counter() - start) * 1000)
    widget.samples.wait_idle()
    name = f"lesson 03 DDIM widget, a prefetched view ({widget_steps} steps, 8 images)"
    rows.append(_ms_row(name, statistics.median(move_ms), "widget"))
    return rows


def run_notebook(path: Path, fast: bool, timeout: int = 1800) -> tuple[float, float, float | None]:
    """Execute a notebook in a fresh kernel, FAST or in the learner's default mode.

    Returns (wall seconds, kernel peak RSS in MB, peak GPU memory in MB or None without cuda).
    """
    from ..notebooks import execute_notebook

    notebook, seconds = execute_notebook(path, fast=fast, timeout=timeout,
                                         extra_cells=(_PEAK_CELL,))
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    peak_kb = int(re.search(rf"{_PEAK_MARK} (\d+)", text)[1])
    gpu = re.search(rf"{_GPU_MARK} (\d+)", text)
    return seconds, peak_kb / 1024, float(gpu[1]) if gpu else None


#: The notebooks ``--quick`` runs when no ``--notebooks`` is given: the two quickest.
QUICK_NOTEBOOKS = ("00_", "01_")


def solution_notebooks(only=None) -> list[Path]:
    """The solution notebooks in lesson order; ``only`` (a text or several) keeps those whose
    name contains it (one of them)."""
    keep = (only,) if isinstance(only, str) else only
    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    return [p for p in paths if keep is None or any(k in p.name for k in keep)]


def bench_notebooks(fast: bool, only=None) -> list[dict]:
    """One row per solution notebook, ``NN_name.ipynb (FAST)`` or ``(default)``, and a total.

    ``only`` (a text or several) keeps the notebooks whose name contains it (then there is no
    total).
    """
    rows = []
    mode = MODES[fast]
    total = 0.0
    for path in solution_notebooks(only):
        seconds, peak_mb, gpu_mb = run_notebook(path, fast=fast)
        total += seconds
        gpu = f", GPU peak {gpu_mb:.0f} MB" if gpu_mb is not None else ""
        rows.append({"name": f"{path.name} ({mode})",
                     "value": f"{seconds:.1f} s, kernel peak {peak_mb:.0f} MB{gpu}",
                     "kind": "notebook", "notebook": path.name, "mode": mode,
                     "seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1),
                     "gpu_mb": gpu_mb})
    if only is None:
        rows.append({"name": f"all solution notebooks ({mode})", "value": f"{total:.1f} s",
                     "kind": "total", "mode": mode, "seconds": round(total, 2)})
    return rows


def bench_browser() -> list[dict]:
    from .. import labdriver

    reason = labdriver.browser_unavailable_reason()
    if reason:
        return [{"name": "slider to new image in JupyterLab", "value": f"not measured: {reason}",
                 "kind": "widget", "ms": None}]
    result = labdriver.measure_slider_latency(ROOT / "solutions" / "01_forward_noising.ipynb")
    latencies = ", ".join(f"{ms:.0f}" for ms in result["latencies_ms"])
    return [{"name": "slider to new image in JupyterLab (lesson 01)",
             "value": f"median {result['median_ms']:.0f} ms ({latencies})",
             "kind": "widget", "ms": round(result["median_ms"], 3)}]


def notebook_selection(args):
    """Which notebooks a run times: ``--notebooks``, else all, or with ``--quick`` the two
    quickest (``QUICK_NOTEBOOKS``)."""
    if args.notebooks is not None:
        return args.notebooks
    return QUICK_NOTEBOOKS if args.quick else None


def bench_speed(args) -> list[dict]:
    """The timing rows: the core maths, the widget updates, the notebooks (FAST; with
    ``--full`` also the default mode and the browser slider)."""
    repeats = 5 if args.quick else 30
    rows = [bench_forward_diffusion(repeats * 4), bench_widget_redraw(repeats),
            bench_guidance_update(max(3, repeats // 3)),
            bench_adapter_update(max(3, repeats // 3)), *bench_ddim_update(repeats)]
    only = notebook_selection(args)
    rows += bench_notebooks(fast=True, only=only)
    if args.full:
        rows += bench_notebooks(fast=False, only=only)
        if any(p.name.startswith("01_") for p in solution_notebooks(only)):
            rows += bench_browser()  # lesson 01's slider
    return rows
