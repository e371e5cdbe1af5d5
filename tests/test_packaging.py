"""The install paths stay as promised: lean runtime dependencies, torch first, CPU-only on Binder.

A notebook host (Colab, Binder) brings its own jupyter, kernel and torch; the course's runtime
requirements must not ask for them, or ``pip install`` would replace the host's copies.
"""

import ast
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

#: What a notebook host provides and the runtime requirements must leave to it.
HOST_PACKAGES = {"jupyterlab", "notebook", "jupyter-server", "jupyter-client", "ipykernel",
                 "ipython", "nbclient", "nbformat", "psutil", "pytest"}

#: Modules that only maintainers and instructors import, and the extra that provides for them.
EXTRA_FOR = {"dev": "dev", "grading": "grade"}


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = _project()
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in listed}


def test_runtime_dependencies_leave_the_hosts_jupyter_alone():
    runtime = set(_requirements())
    assert not runtime & HOST_PACKAGES, runtime & HOST_PACKAGES
    assert {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors",
            "ipywidgets", "matplotlib", "pillow", "tqdm", "numpy"} <= runtime


def test_extras_hold_the_lab_the_grader_and_the_test_tools():
    assert "jupyterlab" in _requirements("lab")
    grade = set(_requirements("grade"))
    assert {"nbformat", "ipykernel", "jupyter-client", "pyzmq", "psutil"} <= grade
    dev = _requirements("dev")
    assert set(dev["diffusion-course"].extras) == {"lab", "grade"}
    assert {"pytest", "pytest-xdist", "nbval", "papermill", "ruff"} <= set(dev)


@pytest.mark.parametrize("name, admitted, refused", [
    ("torch", ["2.7.0", "2.13.0", "2.13.0+cu126", "2.15.0", "2.15.1"], ["2.6.0", "2.16.0", "3.0"]),
    ("diffusers", ["0.36.0", "0.42.1"], ["0.35.2", "0.43.0"]),  # the checks' oracle: as tested
    ("transformers", ["5.10.1", "5.25.0"], ["5.10.0", "4.57.0", "6.0.0"]),
    ("peft", ["0.19.0", "0.21.2"], ["0.18.1"]),
    ("ipywidgets", ["7.7.1", "8.1.9"], ["9.0.0"]),  # 7.7.1 is Colab's
])
def test_version_ranges(name, admitted, refused):
    specifier = _requirements()[name].specifier
    assert all(specifier.contains(v, prereleases=True) for v in admitted), (name, admitted)
    assert not any(specifier.contains(v, prereleases=True) for v in refused), (name, refused)


def test_the_versions_the_suite_runs_on_are_admitted():
    for name, requirement in {**_requirements(), **_requirements("grade")}.items():
        installed = importlib.metadata.version(name)
        assert requirement.specifier.contains(installed, prereleases=True), (name, installed)


def _imports(path) -> set[str]:
    """Top-level names of the absolute imports in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared_where_it_is_used():
    distributions = importlib.metadata.packages_distributions()
    runtime = set(_requirements()) | {"ipython"}  # IPython comes with ipywidgets
    problems = []
    for path in sorted((ROOT / "course").rglob("*.py")):
        relative = path.relative_to(ROOT / "course")
        extra = EXTRA_FOR.get(relative.parts[0])
        allowed = runtime | (set(_requirements(extra)) if extra else set())
        if extra == "dev":
            allowed |= set(_requirements("grade")) | set(_requirements("lab"))
        for module in _imports(path) - set(sys.stdlib_module_names) - {"course", "__future__"}:
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & allowed:
                problems.append(f"course/{relative} imports {module} ({', '.join(names)})")
    assert not problems, "\n".join(problems)


#: Requirements used without an import, each with where that use can be seen.
USED_WITHOUT_IMPORT = {
    # (requirement, file, text that shows the use)
    "jupyterlab": ("Makefile", "jupyter lab"),
    "ipykernel": ("course/grading/sandbox.py", "ipykernel_launcher"),  # the learner's kernel
    "pytest-xdist": ("Makefile", "pytest -n 2"),
    "nbval": ("Makefile", "--nbval-lax"),
    "ruff": ("Makefile", "ruff check"),
}


def _imported_distributions(files) -> set[str]:
    distributions = importlib.metadata.packages_distributions()
    return {canonicalize_name(d) for path in files for module in _imports(path)
            for d in distributions.get(module, [module])}


def test_every_declared_dependency_is_used():
    """The other direction: nothing is declared that the course does not use."""
    course_files = sorted((ROOT / "course").rglob("*.py"))
    test_files = sorted((ROOT / "tests").rglob("*.py")) + [ROOT / "conftest.py"]
    used = _imported_distributions(course_files)
    evidence = {name for name, (file, text) in USED_WITHOUT_IMPORT.items()
                if text in (ROOT / file).read_text()}
    unused = []
    for extra, scope in [(None, used), ("lab", used | evidence), ("grade", used | evidence),
                         ("dev", used | evidence | _imported_distributions(test_files))]:
        for name in set(_requirements(extra)) - {"diffusion-course"}:
            if name not in scope:
                unused.append(f"{extra or 'runtime'}: {name}")
    assert not unused, "declared but never used:\n" + "\n".join(sorted(unused))


def test_tools_have_an_upper_bound():
    # a linter's new release brings new rules: the suite must not turn red on its own
    assert _requirements("dev")["ruff"].specifier.contains("0.17.6")
    assert not _requirements("dev")["ruff"].specifier.contains("1.0")
    assert not _requirements("dev")["ruff"].specifier.contains("0.99")


def test_package_data_ships_every_asset():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["course"]
    package = ROOT / "course"
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    assets = {path for path in (package / "assets").rglob("*") if path.is_file()}
    assert assets and assets <= shipped, sorted(str(p) for p in assets - shipped)


def _make_dry_run(*args: str, env: dict | None = None) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = subprocess.run(["make", "-n", *args, "VENV=/nonexistent-venv"], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return run.stdout


def test_makefile_installs_torch_first_then_the_right_extra(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    # no GPU, the CPU wheel on disk (as on CI): the CPU build, no other index asked
    lab = _make_dry_run("lab", "USER_ID=1000", env={"PIP_FIND_LINKS": str(wheels),
                                                    "PATH": _path_without_gpu()})
    if platform.system() == "Linux":
        assert 'pip install --quiet "torch==2.13.0+cpu" \n' in lab
    assert lab.index('"torch==2.13.0') < lab.index('-e ".[lab]"')
    assert "jupyter lab  lessons/00_welcome.ipynb" in lab and "--allow-root" not in lab
    test = _make_dry_run("test", env={"PIP_FIND_LINKS": str(wheels), "PATH": _path_without_gpu()})
    assert test.index('"torch==2.13.0') < test.index('-e ".[dev]"') < test.index("pytest")


@pytest.mark.skipif(platform.system() != "Linux", reason="the +cpu builds are Linux wheels")
def test_without_a_gpu_or_a_wheel_on_disk_the_cpu_build_comes_from_pytorchs_index():
    lab = _make_dry_run("lab", "USER_ID=1000",
                        env={"PIP_FIND_LINKS": "", "PATH": _path_without_gpu()})
    assert ('pip install --quiet "torch==2.13.0+cpu" '
            "--extra-index-url https://download.pytorch.org/whl/cpu") in lab


def test_with_a_gpu_torch_comes_from_pypi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    lab = _make_dry_run("lab", "USER_ID=1000", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert 'pip install --quiet "torch==2.13.0" \n' in lab


def _path_without_gpu() -> str:
    return os.pathsep.join(folder for folder in os.environ["PATH"].split(os.pathsep)
                           if not (Path(folder) / "nvidia-smi").exists())


def test_make_lab_runs_as_root():
    lab = _make_dry_run("lab", "USER_ID=0")
    assert "jupyter lab --allow-root lessons/00_welcome.ipynb" in lab


def test_binder_installs_cpu_torch_and_the_lean_course():
    text = (ROOT / "binder" / "requirements.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert "." in lines  # Binder's image brings JupyterLab and ipywidgets 8: no extra needed
    assert any(line.startswith("--extra-index-url") and "/whl/cpu" in line for line in lines)
    torch = Requirement(next(line for line in lines if line.startswith("torch")))
    assert str(torch.specifier) == "==2.13.0+cpu"
    assert _requirements()["torch"].specifier.contains("2.13.0+cpu")


def test_ci_requires_the_browser_and_runs_the_readme_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "COURSE_REQUIRE_BROWSER=1" in ci and "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()


def test_colab_installs_the_release_the_notebook_belongs_to():
    import re

    import nbformat

    import course

    version = _project()["version"]
    assert course.__version__ == version
    for path in sorted((ROOT / "solutions").glob("*.ipynb")) + sorted(
            (ROOT / "lessons").glob("*.ipynb")):
        install = next(c.source for c in nbformat.read(path, as_version=4).cells
                       if c.cell_type == "code")
        refs = re.findall(r"git\+https://\S+?@([\w.\-]+)\"", install)
        assert refs == [f"v{version}"], (path.name, install)
