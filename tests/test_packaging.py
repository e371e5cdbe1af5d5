"""The install paths stay as promised: lean runtime dependencies, torch first, CPU-only on Binder.

A notebook host (Colab, Binder) brings its own jupyter, kernel and torch; the course's runtime
requirements must not ask for them, or ``pip install`` would replace the host's copies.
"""

import ast
import importlib.metadata
import shutil
import subprocess
import sys

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

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
    assert {"nbclient", "nbformat", "ipykernel", "psutil"} <= set(_requirements("grade"))
    dev = _requirements("dev")
    assert set(dev["diffusion-course"].extras) == {"lab", "grade"}
    assert {"pytest", "pytest-xdist", "nbval", "papermill", "ruff"} <= set(dev)


@pytest.mark.parametrize("name, admitted, refused", [
    ("torch", ["2.4.0", "2.13.0", "2.13.0+cu126", "2.15.0", "2.15.1"], ["2.3.1", "2.16.0", "3.0"]),
    ("diffusers", ["0.30.0", "0.42.1"], ["0.29.2", "0.43.0"]),  # the checks' oracle: as tested
    ("transformers", ["4.44.0", "5.24.0"], ["6.0.0"]),
    ("peft", ["0.12.0", "0.21.2"], ["0.11.1"]),
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


def test_package_data_ships_every_asset():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["course"]
    package = ROOT / "course"
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    assets = {path for path in (package / "assets").rglob("*") if path.is_file()}
    assert assets and assets <= shipped, sorted(str(p) for p in assets - shipped)


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = subprocess.run(["make", "-n", *args, "VENV=/nonexistent-venv"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return run.stdout


def test_makefile_installs_torch_first_then_the_right_extra():
    lab = _make_dry_run("lab", "USER_ID=1000")
    assert lab.index('pip install --quiet "torch==2.13.0"') < lab.index('-e ".[lab]"')
    assert "jupyter lab  lessons/00_welcome.ipynb" in lab and "--allow-root" not in lab
    test = _make_dry_run("test")
    assert test.index('"torch==2.13.0"') < test.index('-e ".[dev]"') < test.index("pytest")
    assert "TORCH  ?= torch==2.13.0" in (ROOT / "Makefile").read_text()


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
