"""Installing the course into a notebook host leaves the host's jupyter and torch alone.

Colab's install cell is ``%pip install "diffusion-course @ git+..."``. Here a throwaway virtual
environment plays the host: an older ipykernel, jupyter_server and ipywidgets (as hosts pin them)
and a CUDA build of torch. pip is asked what it *would* install for this checkout
(``--dry-run --report``); nothing the host already runs may be in that list.

torch is a metadata-only stand-in (a ``dist-info`` folder, no code): pip decides what to replace
from installed versions alone, and a real CUDA build would cost gigabytes. The jupyter packages
are real, so that their own dependencies (IPython, jupyter_client, ...) are there as on a host.

Needs the package index. Skips, saying why, when pip cannot reach it; set
``COURSE_REQUIRE_NETWORK=1`` to make that a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

#: The host's own packages, pinned at versions older than the course's extras would pick.
HOST_PINS = ["ipykernel==6.17.1", "jupyter_server==2.10.0", "ipywidgets==7.7.1"]
#: A CUDA torch as Colab ships it; the course's range must accept it as it is.
HOST_TORCH = "2.13.0+cu126"
#: What pip must never install (and so replace) on a host.
HOST_OWNED = {"torch", "ipykernel", "jupyter-server", "jupyterlab", "notebook", "jupyter-client",
              "ipython", "ipywidgets"}


def _pip(python: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _unreachable(why: str, run: subprocess.CompletedProcess) -> None:
    """Skip (or fail, when the network is required) with pip's own last words."""
    tail = "\n".join(line for line in run.stderr.splitlines() if "is ignored" not in line)[-800:]
    message = f"{why}: pip exited with {run.returncode}\n{tail}"
    if os.environ.get("COURSE_REQUIRE_NETWORK") == "1":
        pytest.fail(message)
    print(message)
    pytest.skip(message)


def _fake_torch(python: Path, version: str) -> None:
    """Register torch ``version`` as installed, as a dist-info folder without code."""
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    info = Path(site.stdout.strip()) / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def _metadata_source(destination: Path) -> Path:
    """A copy of what pip needs to read the package's requirements, away from the checkout."""
    (destination / "course").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "course/__init__.py"):
        shutil.copy(ROOT / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A host-like environment: its python and its installed packages {name: version}."""
    root = tmp_path_factory.mktemp("host")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    _fake_torch(python, HOST_TORCH)
    run = _pip(python, "install", "--quiet", "--no-compile", *HOST_PINS)
    if run.returncode:
        _unreachable("could not build the host environment", run)
    listed = json.loads(_pip(python, "list", "--format", "json").stdout)
    return python, {canonicalize_name(p["name"]): p["version"] for p in listed}


@pytest.mark.network
def test_installing_the_course_replaces_nothing_the_host_runs(host, tmp_path):
    python, installed = host
    assert installed["torch"] == HOST_TORCH and installed["ipykernel"] == "6.17.1"
    source = _metadata_source(tmp_path / "src")
    report = tmp_path / "report.json"
    start = time.perf_counter()
    run = _pip(python, "install", "--dry-run", "--quiet", "--report", str(report), str(source))
    seconds = time.perf_counter() - start
    if run.returncode:
        if "ResolutionImpossible" in run.stderr or "conflict" in run.stderr.lower():
            pytest.fail(f"the course's requirements conflict with the host's:\n{run.stderr}")
        _unreachable("could not resolve the course's requirements", run)
    wanted = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    print(f"pip would install {len(wanted)} packages in {seconds:.0f} s: "
          + ", ".join(f"{name} {version}" for name, version in sorted(wanted.items())))
    assert "diffusion-course" in wanted
    assert not wanted.keys() & HOST_OWNED, sorted(wanted.keys() & HOST_OWNED)
    replaced = {name: f"{installed[name]} -> {wanted[name]}" for name in wanted
                if name in installed}
    assert not replaced, f"pip would replace the host's own packages: {replaced}"
