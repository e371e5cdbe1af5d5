"""The install paths stay as promised: torch first and CPU-only where it matters."""

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement

from tests.helpers import ROOT


def _requirements():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}


def test_torch_range_admits_the_cpu_build_on_disk():
    torch = _requirements()["torch"]
    assert torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("3.0.0")  # an open range would pull a new CUDA build


def test_makefile_installs_torch_before_the_package():
    makefile = (ROOT / "Makefile").read_text()
    torch_at = makefile.index('pip install --quiet "$(TORCH)"')
    assert torch_at < makefile.index("pip install --quiet -e .")
    assert "TORCH  ?= torch==2.13.0" in makefile


def test_binder_installs_cpu_torch_and_the_course():
    text = (ROOT / "binder" / "requirements.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert "." in lines
    assert any(line.startswith("--extra-index-url") and "/whl/cpu" in line for line in lines)
    torch = Requirement(next(line for line in lines if line.startswith("torch")))
    assert str(torch.specifier) == "==2.13.0+cpu"
    assert _requirements()["torch"].specifier.contains("2.13.0")


def test_ci_requires_the_browser_and_runs_the_readme_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "COURSE_REQUIRE_BROWSER=1" in ci and "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()
