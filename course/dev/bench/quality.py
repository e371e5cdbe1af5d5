"""Lesson 03's scheduler table at full size (``--quality``, ``--quality-only``): every scheduler
at 10, 20 and 50 steps on lesson 02's bundled model, 256 images a row, and DDPM taking all 1000
steps. Written to ``course/assets/scheduler_quality.json`` with its date, machine and versions;
lesson 03 shows that file next to its own small live run.
"""

from __future__ import annotations

import json
import time

from .machine import machine_info, versions

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
    from ...device import pick_device
    from ...models import load_unet
    from ...sampling import compare_schedulers, describe_scheduler, module_schedulers

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
