"""Speed and memory of what learners run: ``python -m course bench [--quick] [--write-readme]``.

Measured, never asserted: the numbers land in tables (and, with ``--write-readme``, in the
README: speed between the ``bench`` markers, quality between the ``quality`` markers). Timings are
medians of repeated runs on this machine.

- the core maths (``forward_diffusion`` on a training-sized batch),
- one redraw of the lesson 01 widget (what a slider move costs in the kernel), and one update
  of lesson 05's guidance widget (a fresh image from the tiny pipeline),
- every solution notebook executed in FAST mode: wall time and the kernel's peak memory,
- with ``--full``: every solution notebook again in the learner's default mode (what "Run All"
  does on this machine, its device picked as the lessons do: cuda, then mps, then cpu), and the
  slider latency in a real browser;
- with ``--busy N``: all of the above while N other processes each keep one CPU core busy (a
  matrix product in a loop, as a second notebook training a model would), since a learner's
  machine is rarely idle;
- with ``--quality`` (or alone, ``--quality-only``): lesson 03's scheduler table on lesson 02's
  bundled model, 256 images a row (its DDPM 1000-step row is the model's own sample quality),
  written to ``course/assets/scheduler_quality.json`` with its date, machine and versions; lesson
  03 shows that file next to its own small live run. About 45 minutes on 2 CPU cores, far less
  on a GPU (``--device cuda``, or auto). ``--quality-images 8 --quality-steps 10`` tries the
  whole path in seconds; ``--quality-from FILE`` rewrites the README section from a file
  measured elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
#: README sections the benchmark rewrites: speed and memory, and sample quality (slow to measure)
SECTIONS = {"speed": "bench", "quality": "quality"}
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


#: What each ``--busy`` process runs: one thread of float32 matrix products, until the
#: benchmark that started it is gone (killed, it cannot clean up after itself).
_BUSY_LOOP = (
    "import os, torch\n"
    "parent = os.getppid()\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(256, 256)\n"
    "while os.getppid() == parent:\n"
    "    a = torch.tanh(a @ a)\n"
)


@contextlib.contextmanager
def busy_cores(n: int):
    """Within the block, ``n`` processes each keep one core busy; they are killed after."""
    workers = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) for _ in range(n)]
    try:
        yield
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.wait()


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy imports and allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_forward_diffusion(repeats: int) -> dict:
    from ..diffusion import forward_diffusion, make_beta_schedule

    betas = make_beta_schedule("linear", 1000)
    x0 = torch.randn(64, 3, 32, 32)
    t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0))
    ms = _median_ms(lambda: forward_diffusion(x0, t, betas), repeats)
    return {"name": "forward_diffusion, batch 64x3x32x32", "value": f"{ms:.2f} ms"}


def bench_widget_redraw(repeats: int) -> dict:
    from ..data import load_photo
    from ..viz import plots

    photo = load_photo(size=128)
    ms = _median_ms(lambda: plots.figure_to_png(plots.noising_figure(photo, 400)), repeats)
    return {"name": "lesson 01 widget redraw (128 px photo + histogram)", "value": f"{ms:.0f} ms"}


def bench_guidance_update(repeats: int) -> dict:
    """What one move of lesson 05's guidance slider costs in the kernel: sample, draw, encode."""
    from ..models import load_pipeline
    from ..tinysd.guided import guided_sample
    from ..viz import plots
    from ..viz.guidance import guidance_figure

    pipe = load_pipeline("tiny-shapes")
    prompt, steps = "a red circle on the left", 10  # the widget's default step count

    def update():
        image = guided_sample(pipe, [prompt], 7.5, steps, seed=0)[0]
        plots.figure_to_png(guidance_figure(image, prompt, 7.5, steps=steps))

    update()  # the first call pays for lazy imports and allocations
    ms = _median_ms(update, repeats)
    return {"name": f"lesson 05 guidance widget update (tiny SD, {steps} steps, w = 7.5)",
            "value": f"{ms:.0f} ms"}


def bench_adapter_update(repeats: int) -> dict:
    """What one move of lesson 07's strength sliders costs in the kernel: set both adapters'
    strengths, sample the widget's three images, judge and draw them."""
    from ..lora import load_adapter, set_adapter_strengths
    from ..models import load_pipeline
    from ..tinysd.evaluate import generate
    from ..viz import plots
    from ..viz.lora import adapter_figure

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
    return {"name": f"lesson 07 adapter widget update (2 adapters, 3 images, {steps} steps)",
            "value": f"{ms:.0f} ms"}


def run_notebook(path: Path, fast: bool, timeout: int = 1800) -> tuple[float, float, float | None]:
    """Execute a notebook in a fresh kernel, FAST or in the learner's default mode.

    Returns (wall seconds, kernel peak RSS in MB, peak GPU memory in MB or None without cuda).
    """
    from .notebooks import execute_notebook

    notebook, seconds = execute_notebook(path, fast=fast, timeout=timeout,
                                         extra_cells=(_PEAK_CELL,))
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    peak_kb = int(re.search(rf"{_PEAK_MARK} (\d+)", text)[1])
    gpu = re.search(rf"{_GPU_MARK} (\d+)", text)
    return seconds, peak_kb / 1024, float(gpu[1]) if gpu else None


def bench_notebooks(fast: bool, only: str | None = None) -> list[dict]:
    """One row per solution notebook, ``NN_name.ipynb (FAST)`` or ``(default)``, and a total.

    ``only`` keeps the notebooks whose name contains it (then there is no total).
    """
    rows = []
    mode = MODES[fast]
    total = 0.0
    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    for path in [p for p in paths if only is None or only in p.name]:
        seconds, peak_mb, gpu_mb = run_notebook(path, fast=fast)
        total += seconds
        gpu = f", GPU peak {gpu_mb:.0f} MB" if gpu_mb is not None else ""
        rows.append({"name": f"{path.name} ({mode})",
                     "value": f"{seconds:.1f} s, kernel peak {peak_mb:.0f} MB{gpu}"})
    if only is None:
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


#: The full-size comparison: every scheduler at these step counts, and DDPM taking every step.
QUALITY_IMAGES = 256
QUALITY_STEPS = (10, 20, 50)
REFERENCE_STEPS = 1000


def bench_quality(n: int = QUALITY_IMAGES, device: str = "auto", step_counts=QUALITY_STEPS,
                  reference_steps: int = REFERENCE_STEPS, seed: int = 0,
                  progress: bool = True) -> dict:
    """Lesson 03's scheduler table on lesson 02's bundled model, ``n`` images per row.

    Every scheduler of ``course.sampling.module_schedulers`` at each of ``step_counts``, then
    DDPM with ``reference_steps`` (0: none); with all 1000 steps that last row is also the
    model's own sample quality. Returns the table as written to ``scheduler_quality.json``:
    what, date, command, machine, versions, device, model, n_images, seed, schedulers, rows.
    """
    from ..device import pick_device
    from ..models import load_unet
    from ..sampling import compare_schedulers, describe_scheduler, module_schedulers

    where = pick_device(device)
    schedulers = module_schedulers()
    reference = ("DDPM", reference_steps) if reference_steps else None
    rows = compare_schedulers(load_unet("ddpm-shapes", device=where), schedulers, step_counts, n,
                              reference=reference, seed=seed, progress=progress)
    command = f"python -m course bench --quality-only --device {where.type}"
    if n != QUALITY_IMAGES:
        command += f" --quality-images {n}"
    if tuple(step_counts) != QUALITY_STEPS:
        command += f" --quality-steps {','.join(map(str, step_counts))}"
    if reference_steps != REFERENCE_STEPS:
        command += f" --reference-steps {reference_steps}"
    return {
        "what": "Lesson 03's scheduler comparison on lesson 02's bundled model (ddpm-shapes). "
                "Each row draws n_images images in one batch from the same seed; nfe counts the "
                "model calls; clean is the share of images that are one clean shape "
                "(course.metrics.sample_quality); ms_per_image is the row's wall time over "
                "n_images, on device.",
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "machine": machine_info(where),
        "versions": versions(),
        "device": where.type,
        "model": "ddpm-shapes",
        "n_images": n,
        "seed": seed,
        "schedulers": {name: describe_scheduler(make) for name, make in schedulers.items()},
        "rows": [{**row, "clean": round(row["clean"], 6),
                  "ms_per_image": round(row["ms_per_image"], 3)} for row in rows],
    }


def dump_table(table: dict) -> str:
    """The table as JSON text, one line per row, so that a diff shows which numbers moved."""
    head = json.dumps({k: v for k, v in table.items() if k != "rows"}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in table["rows"])
    return f'{head[:-2]},\n "rows": [\n  {rows}\n ]\n}}\n'


def quality_rows(table: dict) -> list[dict]:
    """The README's quality rows for a table from :func:`bench_quality`."""
    n = table["n_images"]
    return [{"name": f"lesson 02 model: {row['scheduler']}, {row['steps']} steps "
                     f"({row['nfe']} model calls, {n} images)",
             "value": f"{row['clean']:.1%} clean single shapes, "
                      f"{row['ms_per_image']:.1f} ms per image"} for row in table["rows"]]


def quality_markdown(table: dict) -> str:
    """The README's quality section: where the table comes from, then its rows."""
    machine = table["machine"]
    where = machine.get("gpu") or f"{machine['cpu_count']} CPU cores"
    versions = ", ".join(f"{k} {v}" for k, v in table["versions"].items())
    schedulers = ", ".join(f"{k} `{v}`" for k, v in table["schedulers"].items())
    lines = [f"Measured {table['date']} on {machine['platform']}, {where} (device "
             f"{table['device']}; {versions}), {table['n_images']} images a row, by "
             f"`{table['command']}`; also in `course/assets/scheduler_quality.json`.", "",
             f"Schedulers: {schedulers}.", "", "| what | measured |", "|---|---|"]
    lines += [f"| {r['name']} | {r['value']} |" for r in quality_rows(table)]
    return "\n".join(lines)


def versions() -> dict:
    from importlib import metadata

    try:
        diffusers = metadata.version("diffusers")
    except metadata.PackageNotFoundError:
        diffusers = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers}


def machine_info(device=None) -> dict:
    """platform, cpu_count and, when ``device`` (or, without one, this machine) has cuda, gpu."""
    import os

    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    gpu = torch.cuda.get_device_name(device) if cuda else None
    return {"platform": f"{platform.system()} {platform.machine()}",
            "cpu_count": os.cpu_count(), "gpu": gpu}


def machine() -> str:
    info = machine_info()
    gpu = f", {info['gpu']}" if info["gpu"] else ""
    return (f"{info['platform']}, {info['cpu_count']} cores{gpu}, "
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


def bench_speed(args) -> list[dict]:
    """The timing rows: the core maths, the widget updates, the notebooks (FAST; with
    ``--full`` also the default mode and the browser slider)."""
    repeats = 5 if args.quick else 30
    rows = [bench_forward_diffusion(repeats * 4), bench_widget_redraw(repeats),
            bench_guidance_update(max(3, repeats // 3)),
            bench_adapter_update(max(3, repeats // 3))]
    rows += bench_notebooks(fast=True, only=args.notebooks)
    if args.full:
        rows += bench_notebooks(fast=False, only=args.notebooks)
        if args.notebooks is None or args.notebooks in "01_forward_noising.ipynb":
            rows += bench_browser()  # lesson 01's slider
    return rows


def _step_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def add_arguments(parser) -> None:
    """The options of ``python -m course bench``."""
    from ..sampling import QUALITY_TABLE

    parser.description = __doc__
    parser.add_argument("--quick", action="store_true", help="fewer repeats of the timings")
    parser.add_argument("--full", action="store_true",
                        help="also every notebook in the learner's default mode, and the browser "
                        "slider latency")
    parser.add_argument("--quality", action="store_true",
                        help="also the sample quality of the bundled model: the scheduler table "
                        "(about 45 min on 2 CPU cores, far less on a GPU)")
    parser.add_argument("--quality-only", action="store_true", help="only the sample quality")
    parser.add_argument("--notebooks", metavar="TEXT",
                        help="only the solution notebooks whose name contains TEXT (say, 03)")
    parser.add_argument("--device", default="auto",
                        help="where the scheduler table runs: auto (cuda, then mps, then cpu), "
                        "cpu, cuda, ...")
    parser.add_argument("--quality-images", type=int, default=QUALITY_IMAGES,
                        help=f"images per row of the scheduler table (default {QUALITY_IMAGES})")
    parser.add_argument("--quality-steps", type=_step_list, default=QUALITY_STEPS,
                        help="step counts, comma-separated (default "
                        f"{','.join(map(str, QUALITY_STEPS))})")
    parser.add_argument("--reference-steps", type=int, default=REFERENCE_STEPS,
                        help=f"steps of the DDPM baseline row, 0 for none (default "
                        f"{REFERENCE_STEPS})")
    parser.add_argument("--quality-out", default=str(QUALITY_TABLE),
                        help="where the scheduler table goes (default: the asset lesson 03 shows)")
    parser.add_argument("--quality-from", metavar="FILE",
                        help="do not measure: take the scheduler table from FILE (say, the "
                        "shipped asset) for the printout and --write-readme")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="measure while N other processes each keep a core busy")
    parser.add_argument("--json", dest="json_path", help="also write the rows as JSON")
    parser.add_argument("--write-readme", action="store_true",
                        help="update the README's tables for what was measured")


def run(args) -> int:
    """Measure what the options of ``add_arguments`` ask for; print (and write) the tables."""
    from ..sampling import load_quality_table

    tables = {}
    quality_only = args.quality_only or bool(args.quality_from)
    if not quality_only:
        with busy_cores(args.busy):
            rows = bench_speed(args)
        if args.busy:
            for row in rows:
                row["name"] += f", {args.busy} other core{'s' if args.busy > 1 else ''} busy"
        tables["speed"] = to_markdown(rows, time.strftime("%Y-%m-%d"))
        data = {"speed": rows}
    else:
        data = {}
    if args.quality_from:
        quality = load_quality_table(args.quality_from)
    elif args.quality or args.quality_only:
        quality = bench_quality(args.quality_images, args.device, args.quality_steps,
                                args.reference_steps)
        out = Path(args.quality_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dump_table(quality), encoding="utf-8")
        print(f"wrote {out}")
    else:
        quality = None
    if quality is not None:
        tables["quality"] = quality_markdown(quality)
        data["quality"] = quality
    for section, table in tables.items():
        print(table, end="\n\n")
        if args.write_readme:
            write_readme(table, section)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return 0
