"""The benchmark's dated report: a folder with ``README.md`` (every section, each saying what it
measured or why it was skipped), PNG plots and ``measurements.json`` (everything, for a diff).

``write_report(measurements, folder)`` only formats: it takes the dict ``cli.collect`` builds
and measures nothing, so it can be tried on made-up numbers. Plots are drawn on matplotlib's Agg
canvas (no display, no pyplot state).
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: the report's sections, in order: (key in measurements, heading)
SECTIONS = (
    ("notebooks", "Notebooks: wall time and peak memory"),
    ("widgets", "Widget latencies and core maths"),
    ("adherence", "Prompt adherence of the bundled pipelines"),
    ("training", "Training recipes (stored records)"),
    ("lora", "LoRA study (stored)"),
    ("flow", "Flow matching against DDPM (stored)"),
    ("grading", "Grading time per notebook"),
    ("quality", "Lesson 03's scheduler table"),
)
DPI = 80


def _save(fig: Figure, path: Path) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path.name


def _skipped(measurements: dict, key: str) -> str:
    return f"Skipped: {measurements.get('skipped', {}).get(key, 'not measured in this run')}."


def _notes(measurements: dict, key: str) -> list[str]:
    note = measurements.get("notes", {}).get(key)
    return [f"_{note}_", ""] if note else []


# --------------------------------------------------------------------------------------------
# notebooks
# --------------------------------------------------------------------------------------------


def _notebook_table(rows: list[dict]) -> dict:
    """notebook -> mode -> its row, in the order the notebooks ran."""
    table: dict = {}
    for row in rows:
        if row.get("kind") == "notebook":
            table.setdefault(row["notebook"], {})[row["mode"]] = row
    return table


def plot_notebooks(table: dict, path: Path) -> str:
    """Bars: wall time (left) and kernel peak memory (right) per notebook, FAST and default."""
    fig = Figure(figsize=(9, 3.6))
    names = list(table)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "seconds", "wall time (s)"),
                           (axes[1], "peak_mb", "kernel peak memory (MB)")):
        for offset, mode in ((-0.2, "FAST"), (0.2, "default")):
            xs = [i + offset for i, n in enumerate(names) if mode in table[n]]
            ys = [table[n][mode][key] for n in names if mode in table[n]]
            if xs:
                ax.bar(xs, ys, width=0.4, label=mode)
        ax.set_xticks(range(len(names)), [n.split("_")[0] for n in names])
        ax.set_xlabel("notebook")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def notebooks_section(measurements: dict, folder: Path) -> list[str]:
    rows = measurements.get("speed") or []
    table = _notebook_table(rows)
    if not table:
        return [_skipped(measurements, "notebooks")]
    gpu = any(r.get("gpu_mb") is not None for m in table.values() for r in m.values())
    lines = _notes(measurements, "notebooks")
    head = "| notebook | FAST | FAST peak | default | default peak |" + (" GPU peak |" if gpu
                                                                          else "")
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for name, modes in table.items():
        cells = []
        for mode in ("FAST", "default"):
            row = modes.get(mode)
            cells += ([f"{row['seconds']:.1f} s", f"{row['peak_mb']:.0f} MB"] if row
                      else ["-", "-"])
        if gpu:
            peaks = [r["gpu_mb"] for r in modes.values() if r.get("gpu_mb") is not None]
            cells.append(f"{max(peaks):.0f} MB" if peaks else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [r for r in rows if r.get("kind") == "total"]
    lines += [""] + [f"{r['name']}: {r['value']}." for r in totals]
    if not any("default" in m for m in table.values()):
        lines.append(f"Default mode: {_skipped(measurements, 'default')}")
    lines += ["", f"![notebooks]({plot_notebooks(table, folder / 'notebooks.png')})"]
    return lines


# --------------------------------------------------------------------------------------------
# widgets
# --------------------------------------------------------------------------------------------


def widgets_section(measurements: dict, folder: Path) -> list[str]:
    rows = [r for r in measurements.get("speed") or [] if r.get("kind") in ("widget", "maths")]
    if not rows:
        return [_skipped(measurements, "widgets")]
    lines = ["| what | measured |", "|---|---|"]
    lines += [f"| {r['name']} | {r['value']} |" for r in rows]
    if not any("JupyterLab" in r["name"] for r in rows):
        lines += ["", f"Slider in a real browser: {_skipped(measurements, 'browser')}"]
    return lines


# --------------------------------------------------------------------------------------------
# adherence
# --------------------------------------------------------------------------------------------


def _cell(row: dict) -> str:
    return (f"{row['all']:.0%} ({row['color']:.0%}/{row['shape']:.0%}/"
            f"{row['position']:.0%})")


def plot_adherence_steps(adherence: dict, path: Path) -> str:
    """One panel per pipeline: "all three attributes right" against steps, a line per sampler."""
    pipelines = adherence["pipelines"]
    fig = Figure(figsize=(3.2 * len(pipelines), 3.2))
    axes = fig.subplots(1, len(pipelines), squeeze=False)[0]
    for ax, (name, result) in zip(axes, pipelines.items()):
        for sampler in result["samplers"]:
            rows = [r for r in result["steps"] if r["sampler"] == sampler]
            ax.plot([r["steps"] for r in rows], [r["all"] for r in rows], "o-", label=sampler)
        ax.set_xscale("log")
        counts = sorted({r["steps"] for r in result["steps"]})
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("steps")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"adherence (all), w = {adherence['guidance']:g}")
    fig.tight_layout()
    return _save(fig, path)


def plot_adherence_guidance(adherence: dict, path: Path) -> str:
    """Adherence against the guidance scale, a line per pipeline (its empty prompt dotted)."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for name, result in adherence["pipelines"].items():
        rows = result["guidance"]
        line, = ax.plot([r["guidance"] for r in rows], [r["all"] for r in rows], "o-",
                        label=name)
        ax.axhline(result["empty"]["all"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel(f"adherence (all), {adherence['guidance_steps']} steps")
    ax.set_title('dotted: the empty prompt ""', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def adherence_section(measurements: dict, folder: Path) -> list[str]:
    adherence = measurements.get("adherence")
    if not adherence:
        return [_skipped(measurements, "adherence")]
    lines = _notes(measurements, "adherence")
    lines += [f"{adherence['prompts']} {adherence['split']} prompts per row, seed "
              f"{adherence['seed']}, on {adherence['device']}; cells: all three attributes "
              "right (colour/shape/position), judged by `course.metrics.prompt_adherence`.", ""]
    for name, result in adherence["pipelines"].items():
        counts = sorted({r["steps"] for r in result["steps"]})
        lines += [f"### {name} ({result['seconds']} s)", "",
                  f"By steps, guidance w = {adherence['guidance']:g}:", "",
                  "| sampler | " + " | ".join(f"{n} steps" for n in counts) + " |",
                  "|---" * (len(counts) + 1) + "|"]
        for sampler in result["samplers"]:
            by = {r["steps"]: r for r in result["steps"] if r["sampler"] == sampler}
            lines.append(f"| {sampler} | " + " | ".join(_cell(by[n]) if n in by else "-"
                                                        for n in counts) + " |")
        lines += ["", f"By guidance scale, {result['guidance_sampler']}, "
                  f"{adherence['guidance_steps']} steps:", "",
                  "| w | " + " | ".join(f"{r['guidance']:g}" for r in result["guidance"])
                  + ' | "" (empty prompt) |',
                  "|---" * (len(result["guidance"]) + 2) + "|",
                  "| adherence | " + " | ".join(_cell(r) for r in result["guidance"])
                  + f" | {_cell(result['empty'])} |", ""]
    steps = plot_adherence_steps(adherence, folder / "adherence_steps.png")
    guidance = plot_adherence_guidance(adherence, folder / "adherence_guidance.png")
    lines += [f"![adherence by steps]({steps})", "", f"![adherence by guidance]({guidance})"]
    return lines


# --------------------------------------------------------------------------------------------
# stored records, grading, scheduler quality
# --------------------------------------------------------------------------------------------


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.0f} s"


def training_section(measurements: dict, folder: Path) -> list[str]:
    rows = measurements.get("training")
    if not rows:
        return [_skipped(measurements, "training")]
    lines = ["Read from each bundled model's record (`training.json`, or the checkpoint's "
             "metadata), as measured when it was trained.", "",
             "| model | kind | steps x batch | autoencoder | denoiser / adapter | total | "
             "device, threads | torch |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = r["kind"] + (f", {r['objective']}" if r.get("objective") else "")
        vae = (f"from {r['vae_from']}" if r.get("vae_from")
               else _seconds(r.get("vae_seconds")) if "vae_seconds" in r else "-")
        stage = _seconds(r.get("denoiser_seconds")) if "denoiser_seconds" in r else \
            _seconds(r.get("seconds"))
        threads = f", {r['threads']}" if r.get("threads") else ""
        lines.append(f"| {r['model']} | {kind} | {r.get('steps')} x {r.get('batch_size')} | "
                     f"{vae} | {stage} | {_seconds(r.get('seconds'))} | "
                     f"{r.get('device')}{threads} | {r.get('torch') or '-'} |")
    return lines


def _stored_study(measurements: dict, key: str, default_file: str, command: str, to_markdown,
                  cost: str = "") -> list[str]:
    """A study measured by its own command and stored as JSON: its table, or how to make it."""
    study = measurements.get(key)
    path = measurements.get(f"{key}_path", default_file)
    if not study:
        return [f"Not measured yet: no `{path}`; `{command}` writes it{cost}."]
    return [f"From `{path}` (`{command}`).", "", to_markdown(study)]


def lora_section(measurements: dict, folder: Path) -> list[str]:
    from .records import LORA_COMMAND, lora_markdown

    return _stored_study(measurements, "lora", "lora_study.json", LORA_COMMAND, lora_markdown,
                         " (about 40 minutes on 2 CPU cores)")


def flow_section(measurements: dict, folder: Path) -> list[str]:
    from .records import FLOW_COMMAND, flow_markdown

    return _stored_study(measurements, "flow", "flow_study.json", FLOW_COMMAND, flow_markdown)


def grading_section(measurements: dict, folder: Path) -> list[str]:
    rows = measurements.get("grading")
    if not rows:
        return [_skipped(measurements, "grading")]
    lines = _notes(measurements, "grading")
    lines += ["Each solution notebook graded as a learner's (`python -m course grade`, "
              "sandboxed kernel, FAST).", "",
              "| notebook | exercises | score | seconds | notes |", "|---|---|---|---|---|"]
    for r in rows:
        notes = "; ".join(r.get("notes") or [])[:120] or "-"
        lines.append(f"| {r['notebook']} | {r['exercises']} | {r['score']:g}/"
                     f"{r['max_score']:g} | {r['seconds']:.1f} s | {notes} |")
    return lines


def quality_section(measurements: dict, folder: Path) -> list[str]:
    from .quality import quality_markdown

    table = measurements.get("quality")
    if not table:
        return [_skipped(measurements, "quality")]
    where = "measured in this run" if measurements.get("quality_measured") else \
        "the stored table (`course/assets/scheduler_quality.json`), not re-measured"
    return [f"{where[0].upper()}{where[1:]}.", "", quality_markdown(table)]


WRITERS = {"notebooks": notebooks_section, "widgets": widgets_section,
           "adherence": adherence_section, "training": training_section,
           "lora": lora_section, "flow": flow_section, "grading": grading_section,
           "quality": quality_section}


def report_markdown(measurements: dict, folder: Path) -> str:
    """The report's text; its plots are written into ``folder`` on the way."""
    quick = " (--quick: small sizes, a subset; numbers to try the path, not to quote)" \
        if measurements.get("quick") else ""
    busy = measurements.get("busy") or 0
    lines = [f"# Benchmark report, {measurements['date']}{quick}", "",
             f"Machine: {measurements['machine']}.",
             f"Command: `{measurements['command']}`"
             + (f", measured while {busy} other core{'s were' if busy > 1 else ' was'} kept "
                "busy" if busy else "") + ".",
             f"Wall time of the whole run: {measurements.get('seconds', '?')} s.", ""]
    for key, heading in SECTIONS:
        lines += [f"## {heading}", "", *WRITERS[key](measurements, folder), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(measurements: dict, folder) -> Path:
    """Write ``README.md``, the plots and ``measurements.json`` into ``folder``; its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(report_markdown(measurements, folder), encoding="utf-8")
    (folder / "measurements.json").write_text(json.dumps(measurements, indent=1) + "\n",
                                              encoding="utf-8")
    return folder
