"""Command line: ``python -m course COMMAND``; ``python -m course --help`` lists them."""

from __future__ import annotations

import argparse
import sys


def _build_lessons(args) -> int:
    from .dev.authoring import build_lessons

    changed = build_lessons(args.solutions, args.lessons, check=args.check)
    if args.check:
        for path in changed:
            print(f"out of date: {path} (run: python -m course build-lessons)")
        return 1 if changed else 0
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("lessons/ is up to date")
    return 0


def _store_outputs(args) -> int:
    from .dev.authoring import store_checked_outputs

    for path in args.notebooks:
        print(f"{path}: stored the output of {store_checked_outputs(path)} checked cells")
    return 0


def _doctor(args) -> int:
    from .device import environment_report

    report = environment_report(probe_network=not args.offline)
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key.ljust(width)}  {value}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("grade", help="execute and grade notebooks", add_help=False)

    build = commands.add_parser("build-lessons", help="write lessons/ from solutions/")
    build.add_argument("--check", action="store_true", help="only report stale lessons")
    build.add_argument("--solutions", default="solutions")
    build.add_argument("--lessons", default="lessons")

    store = commands.add_parser(
        "store-outputs", help="execute solution notebooks, keep only nbval-checked outputs")
    store.add_argument("notebooks", nargs="+")

    commands.add_parser("bench", help="measure speed and memory", add_help=False)
    commands.add_parser("train", help="train a bundled model", add_help=False)

    doctor = commands.add_parser("doctor", help="describe this environment")
    doctor.add_argument("--offline", action="store_true", help="do not probe the hub")

    if argv[:1] in (["grade"], ["bench"], ["train"]):  # these parse their own options
        if argv[0] == "grade":
            from .grading import main as command
        elif argv[0] == "train" and argv[1:2] == ["tiny-sd"]:
            from .tinysd.train import main as command
            argv = argv[1:]
        elif argv[0] == "train" and argv[1:2] == ["lora"]:
            from .tinysd.lora_train import main as command
            argv = argv[1:]
        elif argv[0] == "train":
            from .train import main as command
        else:
            from .dev.bench import main as command
        return command(argv[1:])
    args = parser.parse_args(argv)
    return {"build-lessons": _build_lessons, "store-outputs": _store_outputs,
            "doctor": _doctor}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
