"""The benchmark's plumbing: README sections, the shipped scheduler table, notebook rows.

The measurements themselves are reported, never asserted.
"""

import contextlib
import json

import pytest

from course.__main__ import main as course_main
from course.dev import bench
from course.sampling import QUALITY_TABLE, load_quality_table, module_schedulers

README = """# title

<!-- bench:start -->
old speed
<!-- bench:end -->

text between

<!-- quality:start -->
old quality
<!-- quality:end -->
"""

TABLE = {
    "what": "a test table", "date": "2026-01-02",
    "command": "python -m course bench --quality-only",
    "machine": {"platform": "Linux x86_64", "cpu_count": 2, "gpu": None},
    "versions": {"python": "3.11", "torch": "2.13", "diffusers": "0.42"}, "device": "cpu",
    "model": "ddpm-shapes", "n_images": 2, "seed": 0, "schedulers": {"DDPM": "DDPMScheduler()"},
    "rows": [{"scheduler": "DDPM", "steps": 1000, "nfe": 1000, "clean": 0.5,
              "ms_per_image": 50.0}],
}


def test_write_readme_replaces_only_its_own_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    bench.write_readme("new quality", "quality", readme)
    text = readme.read_text()
    assert "new quality" in text and "old quality" not in text
    assert "old speed" in text and "text between" in text
    bench.write_readme("new speed", "speed", readme)
    assert "old speed" not in readme.read_text() and "new quality" in readme.read_text()


def test_write_readme_names_a_missing_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="quality:start"):
        bench.write_readme("table", "quality", readme)


def _readme_in(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    original = bench.write_readme
    monkeypatch.setattr(bench, "write_readme",
                        lambda table, section: original(table, section, readme))
    return readme


def test_quality_only_measures_writes_the_asset_and_only_the_quality_table(tmp_path, monkeypatch,
                                                                           capsys):
    readme = _readme_in(tmp_path, monkeypatch)
    monkeypatch.setattr(bench, "bench_quality", lambda *args: TABLE)
    monkeypatch.setattr(bench, "bench_notebooks", pytest.fail)  # must not run
    out = tmp_path / "table.json"
    assert course_main(["bench", "--quality-only", "--write-readme",
                        "--quality-out", str(out)]) == 0
    text = readme.read_text()
    assert ("| lesson 02 model: DDPM, 1000 steps (1000 model calls, 2 images) | 50.0% clean "
            "single shapes, 50.0 ms per image |") in text
    assert "Measured 2026-01-02 on Linux x86_64, 2 CPU cores" in text
    assert "`python -m course bench --quality-only`" in text
    assert "old speed" in text
    assert load_quality_table(out) == TABLE
    assert "50.0% clean" in capsys.readouterr().out


def test_quality_from_a_file_rewrites_the_readme_without_measuring(tmp_path, monkeypatch):
    readme = _readme_in(tmp_path, monkeypatch)
    monkeypatch.setattr(bench, "bench_quality", pytest.fail)
    monkeypatch.setattr(bench, "bench_notebooks", pytest.fail)
    source = tmp_path / "measured.json"
    source.write_text(bench.dump_table(TABLE))
    assert course_main(["bench", "--quality-from", str(source), "--write-readme"]) == 0
    assert "50.0% clean single shapes" in readme.read_text()


def test_a_tiny_quality_run_goes_the_whole_way(tmp_path):
    out = tmp_path / "table.json"
    assert course_main(["bench", "--quality-only", "--device", "cpu", "--quality-images", "2",
                        "--quality-steps", "2,3", "--reference-steps", "4",
                        "--quality-out", str(out)]) == 0
    table = load_quality_table(out)
    assert table["device"] == "cpu" and table["n_images"] == 2 and table["model"] == "ddpm-shapes"
    assert table["command"] == ("python -m course bench --quality-only --device cpu "
                                "--quality-images 2 --quality-steps 2,3 --reference-steps 4")
    assert set(table["machine"]) == {"platform", "cpu_count", "gpu"}
    assert set(table["versions"]) == {"python", "torch", "diffusers"}
    runs = [(r["scheduler"], r["steps"], r["nfe"]) for r in table["rows"]]
    assert runs[-1] == ("DDPM", 4, 4)
    assert ("PNDM", 2, 3) in runs and ("DDIM", 3, 3) in runs  # counted: PLMS starts with one more
    assert len(runs) == 2 * len(module_schedulers()) + 1
    assert all(0 <= r["clean"] <= 1 and r["ms_per_image"] > 0 for r in table["rows"])
    assert json.loads(out.read_text()) == table  # one row a line, still plain JSON


def test_the_shipped_table_is_complete_and_matches_the_scheduler_list():
    table = load_quality_table(QUALITY_TABLE)
    schedulers = module_schedulers()
    assert table["model"] == "ddpm-shapes" and table["n_images"] >= 16
    assert {"date", "command", "machine", "versions", "device", "what"} <= set(table)
    assert table["command"].startswith("python -m course bench --quality-only")
    assert list(table["schedulers"]) == list(schedulers)
    runs = {(r["scheduler"], r["steps"]): r for r in table["rows"]}
    expected = {(name, steps) for name in schedulers for steps in bench.QUALITY_STEPS}
    assert set(runs) == expected | {("DDPM", bench.REFERENCE_STEPS)}
    for (name, steps), row in runs.items():
        assert row["nfe"] == steps + (name == "PNDM"), (name, steps)
        assert 0 <= row["clean"] <= 1 and row["ms_per_image"] > 0


def test_notebook_rows_name_the_mode_and_the_memory(monkeypatch):
    monkeypatch.setattr(bench, "run_notebook", lambda path, fast: (12.0, 400.0, None))
    only = bench.bench_notebooks(fast=False, only="03")
    assert [row["name"] for row in only] == ["03_ddim_schedulers.ipynb (default)"]
    names = [row["name"] for row in bench.bench_notebooks(fast=False)]
    assert "02_unet_ddpm.ipynb (default)" in names
    assert names[-1] == "all solution notebooks (default)"
    monkeypatch.setattr(bench, "run_notebook", lambda path, fast: (2.0, 300.0, 512.0))
    rows = bench.bench_notebooks(fast=True)
    assert rows[0]["name"].endswith("(FAST)")
    assert rows[0]["value"] == "2.0 s, kernel peak 300 MB, GPU peak 512 MB"


def test_the_peak_memory_cell_reports_the_rss(capsys):
    exec(bench._PEAK_CELL, {})
    out = capsys.readouterr().out
    assert int(out.split(bench._PEAK_MARK)[1].split()[0]) > 0


def test_guidance_update_row_names_what_it_timed():
    row = bench.bench_guidance_update(repeats=1)
    assert row["name"].startswith("lesson 05 guidance widget update")
    assert row["value"].endswith(" ms") and float(row["value"].split()[0]) > 0


def test_adapter_update_row_names_what_it_timed():
    row = bench.bench_adapter_update(repeats=1)
    assert row["name"].startswith("lesson 07 adapter widget update")
    assert row["value"].endswith(" ms") and float(row["value"].split()[0]) > 0


def test_busy_cores_keep_other_processes_running_only_inside_the_block():
    import time

    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with bench.busy_cores(2):
        time.sleep(2.0)
        workers = [p for p in me.children() if p.pid not in before]
        assert len(workers) == 2
        assert all(p.cpu_times().user > 0.05 for p in workers)  # they compute, not sleep
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


def test_busy_rows_say_how_busy_the_machine_was(tmp_path, monkeypatch):
    readme = _readme_in(tmp_path, monkeypatch)
    started = []

    @contextlib.contextmanager
    def fake_busy(n):
        started.append(n)
        yield

    monkeypatch.setattr(bench, "busy_cores", fake_busy)
    monkeypatch.setattr(bench, "bench_speed",
                        lambda args: [{"name": "01_forward_noising.ipynb (default)",
                                       "value": "9.0 s"}])
    assert course_main(["bench", "--busy", "1", "--write-readme"]) == 0
    assert started == [1]
    assert "| 01_forward_noising.ipynb (default), 1 other core busy | 9.0 s |" in readme.read_text()


def test_busy_processes_stop_when_the_benchmark_dies_without_cleaning_up(tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    script = ("import os, time\n"
              "from course.dev import bench\n"
              "block = bench.busy_cores(1)\n"  # held: a collected generator would clean up
              "block.__enter__()\n"
              "time.sleep(3.0)\n"
              "os._exit(0)\n")  # killed: no finally runs
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    workers = []
    while not workers and time.monotonic() < deadline:  # the parent imports torch first
        workers = psutil.Process(parent.pid).children()
        time.sleep(0.05)
    assert len(workers) == 1
    parent.wait(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "a busy process outlived the benchmark"
