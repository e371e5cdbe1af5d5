"""The declared version range and the known-good set agree with pyproject.toml.

- ``tools/oldest_versions.sh`` installs exactly pyproject's floors, one per runtime requirement;
- ``constraints.txt`` pins every requirement, extras included, inside pyproject's range, and
  Binder installs through it.
"""

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CONSTRAINTS = ROOT / "constraints.txt"


def _pins(text: str) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines of a requirements text."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _floor(requirement: Requirement) -> str:
    (floor,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return floor


def _all_requirements() -> list[Requirement]:
    listed = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values()
                                        for r in extra]
    return [r for r in map(Requirement, listed) if canonicalize_name(r.name) != "diffusion-course"]


def test_the_oldest_versions_script_pins_exactly_pyprojects_floors():
    run = subprocess.run(["bash", "tools/oldest_versions.sh", "--floors"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    pins = _pins(run.stdout)
    runtime = [Requirement(r) for r in PROJECT["dependencies"]]
    assert pins == {canonicalize_name(r.name): _floor(r) for r in runtime}


def test_the_known_good_set_pins_every_requirement_inside_its_range():
    pins = _pins(CONSTRAINTS.read_text())
    for requirement in _all_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # e.g. tomli, for Python 3.10 only
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}")
    assert "diffusion-course" not in pins


def test_the_known_good_torch_admits_the_cpu_and_the_cuda_builds():
    pinned = Requirement(f"torch=={_pins(CONSTRAINTS.read_text())['torch']}")
    assert pinned.specifier.contains("2.13.0+cpu") and pinned.specifier.contains("2.13.0+cu126")


def test_binder_installs_through_the_known_good_set():
    requirements = ROOT / "binder" / "requirements.txt"
    (path,) = re.findall(r"^-c\s+(\S+)", requirements.read_text(), flags=re.M)
    # pip reads a relative path in a requirements file from that file's folder
    assert (requirements.parent / path).resolve() == CONSTRAINTS.resolve()
    (binder_torch,) = re.findall(r"^torch==(\S+)", requirements.read_text(), flags=re.M)
    assert Version(binder_torch).public == _pins(CONSTRAINTS.read_text())["torch"]


@pytest.mark.parametrize("script", ["oldest_versions.sh", "newest_versions.sh"])
def test_the_version_scripts_are_executable(script):
    path = Path(ROOT / "tools" / script)
    assert path.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(path)], check=True)
