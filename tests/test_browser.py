"""The forward-noising widget works in real JupyterLab: moving the slider redraws the picture.

Needs Chromium at /usr/bin/chromium and Playwright. Without them the test skips, unless
``COURSE_REQUIRE_BROWSER=1`` (set in CI), where a missing browser is a failure: a skipped check
there would look like a passing one.

Run it with ``pytest -m browser -s`` (or ``-rA``) to see the latencies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course import labdriver

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "solutions" / "01_forward_noising.ipynb"

#: Timesteps typed into the slider, one redraw each; the widget starts at t=250.
TIMESTEPS = (600, 900, 100)


def require_browser() -> None:
    """Skip when no browser can run here, or fail if CI says one must."""
    reason = labdriver.browser_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"COURSE_REQUIRE_BROWSER=1, but {reason}")
    print(f"skipping the browser test: {reason}")
    pytest.skip(reason)


@pytest.mark.browser
def test_timestep_slider_redraws_the_picture(tmp_path, record_property):
    require_browser()
    assert NOTEBOOK.is_file(), f"{NOTEBOOK.relative_to(REPO_ROOT)} is missing"

    result = labdriver.measure_slider_latency(NOTEBOOK, values=TIMESTEPS, artifacts_dir=tmp_path)

    print(f"\nRun All Cells: {result['run_all_s']} s; slider -> picture latency (ms) for "
          f"t={result['values']}: {result['latencies_ms']}, median {result['median_ms']}; "
          f"screenshot: {result['screenshot']}")
    for key in ("latencies_ms", "median_ms", "run_all_s"):
        record_property(key, result[key])

    assert len(result["latencies_ms"]) == len(TIMESTEPS)
    assert all(result["pictures_changed"]), (
        f"the picture did not change for some timesteps: "
        f"{dict(zip(TIMESTEPS, result['pictures_changed'], strict=True))}")
