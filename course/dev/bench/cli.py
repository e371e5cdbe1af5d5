"""``python -m course bench``: what its options ask for, measured, then written as a report
folder, printed, and (``--write-readme``) put in the README."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from . import adherence, grading, quality, records, speed
from .machine import busy_cores, machine, machine_info, versions
from .readme import ROOT, to_markdown, write_readme

REPORTS = ROOT / "bench" / "reports"


def _step_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def add_arguments(parser) -> None:
    """The options of ``python -m course bench``."""
    from ...sampling import QUALITY_TABLE
    from . import __doc__ as description

    parser.description = description
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: fewer repeats, notebooks 00 and 01 only (unless "
                        "--notebooks), 4 prompts and 2 step counts per adherence row, one "
                        "notebook graded")
    parser.add_argument("--full", action="store_true",
                        help="also every notebook in the learner's default mode, and the browser "
                        "slider latency")
    parser.add_argument("--report", metavar="DIR",
                        help="where the report folder goes (default: bench/reports/YYYY-MM-DD, "
                        "with --quick bench/reports/YYYY-MM-DD-quick)")
    parser.add_argument("--quality", action="store_true",
                        help="also the sample quality of the bundled model: the scheduler table "
                        "(about 45 min on 2 CPU cores, far less on a GPU)")
    parser.add_argument("--quality-only", action="store_true", help="only the sample quality")
    parser.add_argument("--notebooks", metavar="TEXT",
                        help="only the solution notebooks whose name contains TEXT (say, 03)")
    parser.add_argument("--device", default="auto",
                        help="where the scheduler table and the adherence rows run: auto (cuda, "
                        "then mps, then cpu), cpu, cuda, ...")
    parser.add_argument("--quality-images", type=int, default=quality.QUALITY_IMAGES,
                        help=f"images per row of the scheduler table (default "
                        f"{quality.QUALITY_IMAGES})")
    parser.add_argument("--quality-steps", type=_step_list, default=quality.QUALITY_STEPS,
                        help="step counts, comma-separated (default "
                        f"{','.join(map(str, quality.QUALITY_STEPS))})")
    parser.add_argument("--reference-steps", type=int, default=quality.REFERENCE_STEPS,
                        help=f"steps of the DDPM baseline row, 0 for none (default "
                        f"{quality.REFERENCE_STEPS})")
    parser.add_argument("--quality-out", default=str(QUALITY_TABLE),
                        help="where the scheduler table goes (default: the asset lesson 03 shows)")
    parser.add_argument("--quality-from", metavar="FILE",
                        help="do not measure: take the scheduler table from FILE (say, the "
                        "shipped asset) for the printout and --write-readme")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="measure while N other processes each keep a core busy")
    parser.add_argument("--json", dest="json_path", help="also write the measurements as JSON")
    parser.add_argument("--write-readme", action="store_true",
                        help="update the README's tables for what was measured")


def report_folder(args, date: str) -> Path:
    """``--report``, else a dated folder under ``bench/reports``."""
    if args.report:
        return Path(args.report)
    return REPORTS / (f"{date}-quick" if args.quick else date)


def collect(args) -> dict:
    """Everything a report shows: measured now (timings, adherence, grading) or read from the
    stored records (training, LoRA, flow study, scheduler table), with why a part was skipped."""
    from ...sampling import QUALITY_TABLE, load_quality_table

    start = time.perf_counter()
    skipped, notes = {}, {}
    rows = speed.bench_speed(args)
    if args.busy:
        for row in rows:
            row["name"] += f", {args.busy} other core{'s' if args.busy > 1 else ''} busy"
    only = speed.notebook_selection(args)
    if only is not None:
        notes["notebooks"] = f"only the notebooks matching {only!r} (--notebooks or --quick)"
    if not args.full:
        skipped["default"] = "the learner's default mode runs with --full"
        skipped["browser"] = "the browser slider is measured with --full"

    sizes = adherence.QUICK if args.quick else {}
    found = adherence.bench_adherence(device=args.device, **sizes)
    if args.quick:
        notes["adherence"] = (f"--quick: {found['prompts']} prompts, steps "
                              f"{found['step_counts']}, scales {found['scales']}: too few to "
                              "trust; run without --quick for the real numbers")

    graded = grading.QUICK_GRADING if args.quick else None
    grades = grading.bench_grading(graded)
    if graded:
        notes["grading"] = f"--quick: only {', '.join(r['notebook'] for r in grades)}"

    measured_quality = args.quality
    if measured_quality:
        table = quality.bench_quality(args.quality_images, args.device, args.quality_steps,
                                      args.reference_steps)
        _write_quality(table, Path(args.quality_out))
    elif Path(QUALITY_TABLE).is_file():
        table = load_quality_table(QUALITY_TABLE)
    else:
        table = None
        skipped["quality"] = "no stored table; --quality measures it"

    return {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "machine_info": machine_info(),
        "versions": versions(), "command": _command(), "quick": args.quick,
        "busy": args.busy, "speed": rows, "adherence": found, "grading": grades,
        "training": records.training_records(),
        "lora": records.load_study(records.LORA_STUDY), "lora_path": _shown(records.LORA_STUDY),
        "flow": records.load_study(records.FLOW_STUDY), "flow_path": _shown(records.FLOW_STUDY),
        "quality": table, "quality_measured": measured_quality,
        "skipped": skipped, "notes": notes, "seconds": round(time.perf_counter() - start, 1),
    }


def _command() -> str:
    """How this run was started, as ``python -m course bench ...`` (from another caller, the
    bare command)."""
    if sys.argv[1:2] == ["bench"]:
        return "python -m course " + shlex.join(sys.argv[1:])
    return "python -m course bench"


def _shown(path: Path) -> str:
    """A path as the report names it: from the repository root when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _write_quality(table: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(quality.dump_table(table), encoding="utf-8")
    print(f"wrote {out}")


def run(args) -> int:
    """Measure what the options of ``add_arguments`` ask for; print (and write) the tables."""
    import matplotlib

    matplotlib.use("Agg")  # plots go to files; nothing here needs a display
    from ...sampling import load_quality_table
    from .report import write_report

    tables = {}
    if args.quality_only or args.quality_from:
        data = {}
        if args.quality_from:
            table = load_quality_table(args.quality_from)
        else:
            table = quality.bench_quality(args.quality_images, args.device, args.quality_steps,
                                          args.reference_steps)
            _write_quality(table, Path(args.quality_out))
        tables["quality"] = quality.quality_markdown(table)
        data["quality"] = table
    else:
        with busy_cores(args.busy):
            data = collect(args)
        folder = write_report(data, report_folder(args, data["date"]))
        print(f"wrote {folder / 'README.md'}")
        tables["speed"] = to_markdown(data["speed"], data["date"], _shown(folder))
        if data["quality_measured"]:
            tables["quality"] = quality.quality_markdown(data["quality"])
    for section, table in tables.items():
        print(table, end="\n\n")
        if args.write_readme:
            write_readme(table, section)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return 0
