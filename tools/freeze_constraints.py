"""Write constraints.txt: the exact versions of one environment the whole suite passed in.

    python tools/freeze_constraints.py [--output constraints.txt]

Run it with the Python of that environment (a ``make test`` venv). It pins the course's own
requirements, all extras included, and everything they pull in, as installed there; nothing
else the environment happens to hold. torch is pinned without its local label (``2.13.0``, not
``2.13.0+cpu``): a constraint without one admits the CPU and the CUDA builds alike, so the file
serves a GPU machine too.
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SELF = "diffusion-course"

HEADER = """\
# One known-good set: the versions of the environment in which the whole suite (make test) passed,
# on Python {python}, {system}. The ranges in pyproject.toml are what the course accepts; this file
# is what a class should install to get the same numbers as the lessons show. Regenerate it from a
# passing environment with `python tools/freeze_constraints.py`.
#
#     pip install "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
#     pip install -c constraints.txt -e ".[dev]"       # or ".[grade]" to grade, ".[lab]" to learn
#
# torch is pinned as 2.13.0 without a build label: the line admits 2.13.0+cpu (PyTorch's CPU
# wheel, from https://download.pytorch.org/whl/cpu or a folder in PIP_FIND_LINKS, as `make` does)
# and the CUDA builds alike. Install it first, as above: PyPI's own Linux wheel of 2.13.0 is a
# CUDA build of several GB.
"""


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} of ``roots`` and all they require, as installed."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    queue = [(requirement, set()) for requirement in roots]
    while queue:
        requirement, parent_extras = queue.pop()
        if not _wanted(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        if name == SELF:  # the course's own extras, e.g. dev's "diffusion-course[lab,grade]"
            queue += [(r, set()) for extra in requirement.extras for r in _extra(extra)]
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed in {sys.prefix}")
        pinned[name] = distribution.version
        extras = set(requirement.extras)
        queue += [(Requirement(r), extras) for r in distribution.requires or []]
    return pinned


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extra(name: str) -> list[Requirement]:
    return [Requirement(r) for r in _project()["optional-dependencies"][name]]


def constraints_text() -> str:
    project = _project()
    roots = [Requirement(r) for r in project["dependencies"]]
    roots += [r for extra in project["optional-dependencies"] for r in _extra(extra)]
    pinned = closure(roots)
    pinned["torch"] = pinned["torch"].split("+")[0]  # see HEADER
    lines = [f"{name}=={version}" for name, version in sorted(pinned.items())]
    header = HEADER.format(python=platform.python_version(),
                           system=f"{platform.system()} {platform.machine()}")
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args()
    args.output.write_text(constraints_text())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
