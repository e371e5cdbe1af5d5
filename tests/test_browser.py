"""The course widgets work in real JupyterLab: moving a slider redraws the picture.

One test per widget: each runs its lesson's solution notebook (all cells, no errors), types new
values into the widget's sliders and checks the picture changes every time. The tests share one
JupyterLab server; each notebook gets its own browser and kernel.

Needs Chromium at /usr/bin/chromium and Playwright. Without them the tests skip, unless
``COURSE_REQUIRE_BROWSER=1`` (set in CI), where a missing browser is a failure: a skipped check
there would look like a passing one.

Run them with ``pytest -m browser -s`` (or ``-rA``) to see the timings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course.dev import labdriver

pytestmark = pytest.mark.notebook  # JupyterLab starts kernels

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO_ROOT / "solutions"

#: Timesteps typed into lesson 01's slider, one redraw each; the widget starts at t=250.
TIMESTEPS = (600, 900, 100)

#: Lessons 02 and 03 train or sample with a model even in FAST mode, on a CPU that may be busy.
RUN_ALL_TIMEOUT_S = 300


def require_browser() -> None:
    """Skip when no browser can run here, or fail if CI says one must."""
    reason = labdriver.browser_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"COURSE_REQUIRE_BROWSER=1, but {reason}")
    print(f"skipping the browser test: {reason}")
    pytest.skip(reason)


def notebook(name: str) -> Path:
    path = SOLUTIONS / name
    assert path.is_file(), f"{path.relative_to(REPO_ROOT)} is missing"
    return path


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """One JupyterLab for all the tests here: starting it costs several seconds each time."""
    require_browser()
    with labdriver.jupyter_lab(tmp_path_factory.mktemp("lab-root")) as server:
        yield server


def report(result: dict, run_all_s: float, record_property) -> None:
    """Print the timings (seen with -s) and keep them in the JUnit XML."""
    print(f"\nRun All Cells: {run_all_s:.1f} s; slider -> picture latency (ms) for "
          f"{result['values']}: {result['latencies_ms']}, median {result['median_ms']}; "
          f"screenshot: {result['screenshot']}")
    record_property("run_all_s", round(run_all_s, 1))
    record_property("latencies_ms", result["latencies_ms"])
    record_property("median_ms", result["median_ms"])


def assert_every_move_redrew(result: dict) -> None:
    assert all(result["pictures_changed"]), (
        "the picture did not change for some moves: "
        f"{dict(zip(result['values'], result['pictures_changed'], strict=True))}")


@pytest.mark.browser
def test_timestep_slider_redraws_the_picture(lab_server, tmp_path, record_property):
    result = labdriver.measure_slider_latency(notebook("01_forward_noising.ipynb"),
                                              values=TIMESTEPS, artifacts_dir=tmp_path,
                                              server=lab_server)
    report(result, result["run_all_s"], record_property)
    assert len(result["latencies_ms"]) == len(TIMESTEPS)
    assert_every_move_redrew(result)


@pytest.mark.browser
def test_trajectory_slider_scrubs_through_the_sampling_run(lab_server, tmp_path,
                                                           record_property):
    # The widget starts in the middle of the 42 snapshots; visit the last, the first, and back.
    moves = [("step", 41), ("step", 0), ("step", 10)]
    with labdriver.notebook_in_lab(notebook("02_unet_ddpm.ipynb"), lab_server, tmp_path,
                                   timeout=RUN_ALL_TIMEOUT_S) as lab:
        result = labdriver.move_sliders(lab.page, ".course-trajectory", moves, tmp_path)
    report(result, lab.run_all_s, record_property)
    assert_every_move_redrew(result)


@pytest.mark.browser
def test_ddim_sliders_resample_the_images(lab_server, tmp_path, record_property):
    # The widget starts at eta=0.0 with 20 steps; each move re-samples with the lesson's model.
    moves = [("eta", 1.0), ("steps", 10)]
    with labdriver.notebook_in_lab(notebook("03_ddim_schedulers.ipynb"), lab_server, tmp_path,
                                   timeout=RUN_ALL_TIMEOUT_S) as lab:
        result = labdriver.move_sliders(lab.page, ".course-ddim", moves, tmp_path)
    report(result, lab.run_all_s, record_property)
    assert_every_move_redrew(result)
