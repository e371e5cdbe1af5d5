"""Offline: the network really goes away under ``tools/offline.sh``, and every way to the
Hugging Face hub fails at once with what to do, or loads from the local cache.

``tools/offline.sh`` runs a command in a network namespace with only the loopback (the notebook
suite runs offline with it: ``tools/offline.sh python -m pytest tests/test_notebooks.py
solutions --nbval-lax --nbval-current-env``). Its tests skip where no namespace can be made (not
root and no user namespaces).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline  # noqa: F401  (as a lesson has)

from course.models import ENTRIES, load_pipeline, real_pipeline
from course.models.hub import HubUnavailable, hub_access
from tests.helpers import ROOT

OFFLINE = ROOT / "tools" / "offline.sh"
#: every hub id a lesson or tool names: lesson 04/05's SD 1.5 (a registry name), lesson 06's
#: SD-Turbo (a bare id)
HUB_NAMES = ["sd-1.5", "stabilityai/sd-turbo"]
#: "at once": no retries, no waiting for a timeout (diffusers' pipeline classes are imported
#: above, as in a lesson that asks for a pipeline, so the time is the hub path's alone)
FAST_FAIL_S = 3.0


def _offline(code: str, env: dict | None = None, timeout: int = 120):
    """Run Python ``code`` under tools/offline.sh; its stdout parsed as JSON."""
    run = subprocess.run([str(OFFLINE), sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if run.returncode == 3:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


PROBE = """
import json, socket, time

def attempt(address):
    start = time.perf_counter()
    try:
        socket.create_connection(address, timeout=5).close()
        outcome = "connected"
    except OSError as error:
        outcome = type(error).__name__ + ": " + str(error)
    return {"outcome": outcome, "seconds": time.perf_counter() - start}

server = socket.create_server(("127.0.0.1", 0))
results = {"by name": attempt(("pypi.org", 443)), "by address": attempt(("1.1.1.1", 443)),
           "loopback": attempt(server.getsockname())}
"""


def test_offline_sh_cuts_the_network_for_the_process_and_its_kernels():
    code = PROBE + textwrap.dedent("""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import socket\\n"
        "try:\\n"
        "    socket.create_connection(('1.1.1.1', 443), timeout=5)\\n"
        "    print('connected')\\n"
        "except OSError as error:\\n"
        "    print(type(error).__name__)")]
    NotebookClient(notebook, kernel_name="python3", timeout=60).execute()
    results["kernel"] = notebook.cells[0].outputs[0]["text"].strip()
    print(json.dumps(results))
    """)
    results = _offline(code)
    for where in ("by name", "by address"):
        assert results[where]["outcome"] != "connected", results
        assert results[where]["seconds"] < 1.0, results  # refused at once, not timed out
    assert results["loopback"]["outcome"] == "connected", results  # kernels need it
    assert results["kernel"] == "OSError", results


@pytest.mark.parametrize("name", HUB_NAMES)
def test_load_pipeline_of_a_hub_id_offline_says_how_to_get_it(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as raised:
        load_pipeline(name)
    assert time.perf_counter() - start < FAST_FAIL_S
    message = str(raised.value)
    repo = ENTRIES[name].source.removeprefix("hub:") if name in ENTRIES else name
    assert "cannot be reached" in message and f"hf download {repo}" in message
    assert "tiny-shapes" in message  # what does load offline
    assert "sd-1.5" not in message.split("these load:")[1]  # not a hub entry


@pytest.mark.parametrize("name", HUB_NAMES)
def test_real_pipeline_on_a_gpu_offline_skips_with_the_reason(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_SD_STANDIN", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU is not reached
    start = time.perf_counter()
    pipe, why = real_pipeline(name)
    assert time.perf_counter() - start < FAST_FAIL_S
    assert pipe is None and "Hugging Face hub" in why and "hf download" in why


def test_sd15_weights_for_the_lora_scale_study_offline(monkeypatch):
    """``python -m course.lora_scale --weights REPO`` asks the same question first."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="hf download stable-diffusion-v1-5/"):
        hub_access("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_a_name_that_is_neither_folder_nor_hub_id_is_not_sent_to_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="neither a folder here nor a hub id"):
        load_pipeline("./no/such/folder")


def test_hub_paths_fail_at_once_without_a_network_and_without_hf_hub_offline():
    """The real thing: no network at all, and nothing telling the libraries so."""
    results = _offline("""
    import json, time, torch
    # imported already wherever a lesson asks for a pipeline: not part of the wait
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    from course.models import load_pipeline, real_pipeline
    results = {}
    for name in ("sd-1.5", "stabilityai/sd-turbo"):
        start = time.perf_counter()
        try:
            load_pipeline(name)
            results[name] = ["loaded", 0]
        except ConnectionError as error:
            results[name] = [str(error), time.perf_counter() - start]
    torch.cuda.is_available = lambda: True
    results["real"] = real_pipeline("stabilityai/sd-turbo")[1]
    print(json.dumps(results))
    """, env={"HF_HUB_OFFLINE": "0"})
    for name in ("sd-1.5", "stabilityai/sd-turbo"):
        message, seconds = results[name]
        assert "hf download" in message and seconds < FAST_FAIL_S, results
    assert "hf download stabilityai/sd-turbo" in results["real"]


def test_a_hub_model_in_the_local_cache_loads_offline(tmp_path):
    """What `hf download REPO` leaves behind is enough: no network needed to load it."""
    snapshot = tmp_path / "models--someone--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(ENTRIES["tiny-shapes"].local_path(), snapshot)
    (tmp_path / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    run = subprocess.run(
        [sys.executable, "-c", "from course.models import load_pipeline; "
         "print(type(load_pipeline('someone/tiny', device='cpu')).__name__)"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(tmp_path),
             "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "StableDiffusionPipeline"
