"""Command line: ``python -m course COMMAND``; ``python -m course --help`` lists them."""

from __future__ import annotations

import argparse
import sys


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser. ``fill(parser)`` adds its arguments on first use, so that only
    the chosen command's module is imported."""

    def __init__(self, *args, fill=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._fill = fill

    def parse_known_args(self, args=None, namespace=None):
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)
        return super().parse_known_args(args, namespace)


def _grade_arguments(parser) -> None:
    from .grading.grader import add_arguments

    add_arguments(parser)


def _grade(args) -> int:
    from .grading.grader import run

    return run(args)


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


def _bench_arguments(parser) -> None:
    from .dev.bench import add_arguments

    add_arguments(parser)


def _bench(args) -> int:
    from .dev.bench import run

    return run(args)


def _train(args) -> int:
    from .training import RECIPES

    return RECIPES[args.recipe].run(args)


def _doctor(args) -> int:
    from .device import environment_report

    report = environment_report(probe_network=not args.offline)
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key.ljust(width)}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """``python -m course`` and its subcommands; each sets ``run`` to the function it calls."""
    from .training import RECIPES

    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Subcommand)

    grade = commands.add_parser("grade", help="execute and grade notebooks",
                                description="Execute and grade lesson notebooks.",
                                fill=_grade_arguments)
    grade.set_defaults(run=_grade)

    build = commands.add_parser("build-lessons", help="write lessons/ from solutions/")
    build.add_argument("--check", action="store_true", help="only report stale lessons")
    build.add_argument("--solutions", default="solutions")
    build.add_argument("--lessons", default="lessons")
    build.set_defaults(run=_build_lessons)

    store = commands.add_parser(
        "store-outputs", help="execute solution notebooks, keep only nbval-checked outputs")
    store.add_argument("notebooks", nargs="+")
    store.set_defaults(run=_store_outputs)

    bench = commands.add_parser("bench", help="measure speed and memory",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                fill=_bench_arguments)
    bench.set_defaults(run=_bench)

    train = commands.add_parser("train", help="train a model (python -m course train RECIPE "
                                "--help: its options)",
                                description="Train a model with one of the recipes below.")
    recipes = train.add_subparsers(dest="recipe", required=True, metavar="RECIPE",
                                   parser_class=_Subcommand)
    for name, recipe in RECIPES.items():
        recipes.add_parser(name, help=recipe.summary, fill=recipe.add_arguments,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.set_defaults(run=_train)

    doctor = commands.add_parser("doctor", help="describe this environment")
    doctor.add_argument("--offline", action="store_true", help="do not probe the hub")
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
