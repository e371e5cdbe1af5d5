"""The benchmark's plumbing: README sections, the shipped scheduler table, notebook rows, the
report folder (every section, valid plots) and what ``--quick`` runs.

The measurements themselves are reported, never asserted.
"""

import contextlib
import json

import pytest

from course.__main__ import main as course_main
from course.dev.bench import adherence, cli, grading, machine, quality, records, report, speed
from course.dev.bench import readme as bench_readme
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
    bench_readme.write_readme("new quality", "quality", readme)
    text = readme.read_text()
    assert "new quality" in text and "old quality" not in text
    assert "old speed" in text and "text between" in text
    bench_readme.write_readme("new speed", "speed", readme)
    assert "old speed" not in readme.read_text() and "new quality" in readme.read_text()


def test_write_readme_names_a_missing_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="quality:start"):
        bench_readme.write_readme("table", "quality", readme)


def _readme_in(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    original = bench_readme.write_readme
    monkeypatch.setattr(cli, "write_readme",
                        lambda table, section: original(table, section, readme))
    return readme


def test_quality_only_measures_writes_the_asset_and_only_the_quality_table(tmp_path, monkeypatch,
                                                                           capsys):
    readme = _readme_in(tmp_path, monkeypatch)
    monkeypatch.setattr(quality, "bench_quality", lambda *args: TABLE)
    monkeypatch.setattr(speed, "bench_notebooks", pytest.fail)  # must not run
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
    monkeypatch.setattr(quality, "bench_quality", pytest.fail)
    monkeypatch.setattr(speed, "bench_notebooks", pytest.fail)
    source = tmp_path / "measured.json"
    source.write_text(quality.dump_table(TABLE))
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
    expected = {(name, steps) for name in schedulers for steps in quality.QUALITY_STEPS}
    assert set(runs) == expected | {("DDPM", quality.REFERENCE_STEPS)}
    for (name, steps), row in runs.items():
        assert row["nfe"] == steps + (name == "PNDM"), (name, steps)
        assert 0 <= row["clean"] <= 1 and row["ms_per_image"] > 0


def test_notebook_rows_name_the_mode_and_the_memory(monkeypatch):
    monkeypatch.setattr(speed, "run_notebook", lambda path, fast: (12.0, 400.0, None))
    only = speed.bench_notebooks(fast=False, only="03")
    assert [row["name"] for row in only] == ["03_ddim_schedulers.ipynb (default)"]
    names = [row["name"] for row in speed.bench_notebooks(fast=False)]
    assert "02_unet_ddpm.ipynb (default)" in names
    assert names[-1] == "all solution notebooks (default)"
    monkeypatch.setattr(speed, "run_notebook", lambda path, fast: (2.0, 300.0, 512.0))
    rows = speed.bench_notebooks(fast=True)
    assert rows[0]["name"].endswith("(FAST)")
    assert rows[0]["value"] == "2.0 s, kernel peak 300 MB, GPU peak 512 MB"


def test_the_peak_memory_cell_reports_the_rss(capsys):
    exec(speed._PEAK_CELL, {})
    out = capsys.readouterr().out
    assert int(out.split(speed._PEAK_MARK)[1].split()[0]) > 0


def test_guidance_update_row_names_what_it_timed():
    row = speed.bench_guidance_update(repeats=1)
    assert row["name"].startswith("lesson 05 guidance widget update")
    assert row["value"].endswith(" ms") and float(row["value"].split()[0]) > 0


def test_adapter_update_row_names_what_it_timed():
    row = speed.bench_adapter_update(repeats=1)
    assert row["name"].startswith("lesson 07 adapter widget update")
    assert row["value"].endswith(" ms") and float(row["value"].split()[0]) > 0


def test_ddim_update_rows_time_a_new_view_and_a_prefetched_one():
    rows = speed.bench_ddim_update(repeats=1, new_view_steps=(5,), moves=1, widget_steps=5)
    assert [row["name"] for row in rows] == [
        "lesson 03 DDIM widget, a new view (5 steps, 8 images)",
        "lesson 03 DDIM widget, a prefetched view (5 steps, 8 images)"]
    assert all(row["kind"] == "widget" and row["ms"] > 0 for row in rows)


def test_busy_cores_keep_other_processes_running_only_inside_the_block():
    import time

    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with machine.busy_cores(2):
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

    monkeypatch.setattr(cli, "busy_cores", fake_busy)
    monkeypatch.setattr(speed, "bench_speed",
                        lambda args: [{"name": "01_forward_noising.ipynb (default)",
                                       "value": "9.0 s"}])
    _no_heavy_parts(monkeypatch)
    folder = tmp_path / "report"
    assert course_main(["bench", "--busy", "1", "--write-readme", "--report", str(folder)]) == 0
    assert started == [1]
    text = readme.read_text()
    assert "| 01_forward_noising.ipynb (default), 1 other core busy | 9.0 s |" in text
    assert f"Full report: [`{folder}`]({folder})" in text
    assert "1 other core was kept busy" in (folder / "README.md").read_text()


def test_busy_processes_stop_when_the_benchmark_dies_without_cleaning_up(tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    script = ("import os, time\n"
              "from course.dev.bench import machine\n"
              "block = machine.busy_cores(1)\n"  # held: a collected generator would clean up
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


# --------------------------------------------------------------------------------------------
# the report folder
# --------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _judged(all_, color=1.0, shape=1.0, position=1.0, n=4):
    return {"color": color, "shape": shape, "position": position, "all": all_, "n": n}


def fake_adherence():
    def pipeline(samplers, base):
        return {"samplers": samplers, "guidance_sampler": samplers[0],
                "steps": [{"sampler": s, "steps": n, **_judged(min(1.0, base + n / 10))}
                          for s in samplers for n in (2, 4)],
                "guidance": [{"guidance": w, **_judged(base + w / 20, position=0.75)}
                             for w in (1.0, 3.0)],
                "empty": _judged(0.0, 0.25, 0.5, 0.25), "seconds": 1.5, "dtype": "float32"}

    return {"prompts": 4, "split": "seen", "seed": 0, "guidance": 3.0, "guidance_steps": 4,
            "step_counts": [2, 4], "scales": [1.0, 3.0], "device": "cpu",
            "pipelines": {"tiny-shapes": pipeline(["DDIM", "DPM++ 2M"], 0.5),
                          "tiny-shapes-flow": pipeline(["Euler (flow)"], 0.25)}}


def fake_flow_study():
    by_steps = {str(n): {**_judged(0.5), "unet_calls": n} for n in (1, 2)}
    return {"date": "2026-12-01", "device": "cpu (x86_64)", "machine": "Linux x86_64, 2 threads",
            "prompts": 8, "seed": 0, "guidance": 3.0, "study_seconds": 12.0,
            "results": {"adherence": {"flow, Euler": by_steps, "DDIM": by_steps},
                        "straightness": {"flow": {"1": 0.91, "3": 0.87}},
                        "shift": {"1.0": by_steps}}}


def fake_measurements(**changes):
    notebook_rows = []
    for mode, scale in (("FAST", 1.0), ("default", 3.0)):
        notebook_rows += [{"name": f"{name} ({mode})", "value": "-", "kind": "notebook",
                           "notebook": name, "mode": mode, "seconds": seconds * scale,
                           "peak_mb": 400.0 + seconds, "gpu_mb": None}
                          for name, seconds in (("00_welcome.ipynb", 4.0),
                                                ("01_forward_noising.ipynb", 12.0))]
        notebook_rows.append({"name": f"all solution notebooks ({mode})", "kind": "total",
                              "mode": mode, "value": f"{16 * scale:.1f} s",
                              "seconds": 16 * scale})
    speed_rows = [{"name": "forward_diffusion, batch 64x3x32x32", "value": "2.30 ms",
                   "kind": "maths", "ms": 2.3},
                  {"name": "lesson 05 guidance widget update", "value": "263 ms",
                   "kind": "widget", "ms": 263.0},
                  {"name": "slider to new image in JupyterLab (lesson 01)",
                   "value": "median 247 ms (223, 282, 247)", "kind": "widget", "ms": 247.0}]
    speed_rows += notebook_rows
    measurements = {
        "date": "2026-12-07", "machine": "Linux x86_64, 2 cores, python 3.11, torch 2.13",
        "command": "python -m course bench --full", "quick": False, "busy": 0,
        "speed": speed_rows, "adherence": fake_adherence(),
        "grading": [{"notebook": "01_forward_noising.ipynb", "seconds": 30.5, "score": 2.0,
                     "max_score": 2.0, "exercises": 2, "notes": []}],
        "training": records.training_records(),
        "lora": records.load_study(records.LORA_STUDY), "lora_path": "lora_study.json",
        "flow": fake_flow_study(), "flow_path": "flow_study.json",
        "quality": TABLE, "quality_measured": False, "skipped": {}, "notes": {},
        "seconds": 99.0,
    }
    return {**measurements, **changes}


def _images_of(text: str) -> list[str]:
    import re

    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_the_report_has_every_section_its_numbers_and_valid_plots(tmp_path):
    from PIL import Image

    folder = report.write_report(fake_measurements(), tmp_path / "2026-12-07")
    text = (folder / "README.md").read_text()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == [heading for _, heading in report.SECTIONS]
    assert "Skipped" not in text and "Not measured yet" not in text
    assert "| 01_forward_noising.ipynb | 12.0 s | 412 MB | 36.0 s | 412 MB |" in text
    assert "| lesson 05 guidance widget update | 263 ms |" in text
    assert "| DPM++ 2M | 70% (100%/100%/100%) | 90% (100%/100%/100%) |" in text  # base + n / 10
    assert '| adherence | 55% (100%/100%/75%) | 65% (100%/100%/75%) | 0% (25%/50%/25%) |' in text
    assert "### tiny-shapes-flow" in text and "| Euler (flow) |" in text
    assert "| 01_forward_noising.ipynb | 2 | 2/2 | 30.5 s | - |" in text
    assert "| tiny-shapes-flow | pipeline, flow |" in text  # the stored training records
    assert "| purple |" in text and "full fine-tuning" in text  # the stored LoRA study
    assert "| straightness, 50 steps |" in text and "Measured 2026-12-01" in text
    assert "lesson 02 model: DDPM, 1000 steps" in text
    images = _images_of(text)
    assert images == ["notebooks.png", "adherence_steps.png", "adherence_guidance.png"]
    for name in images:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(folder / name) as image:
            image.verify()
            assert min(image.size) > 100
    assert json.loads((folder / "measurements.json").read_text())["seconds"] == 99.0


def test_the_report_says_what_was_skipped_and_why(tmp_path):
    rows = [r for r in fake_measurements()["speed"]
            if r.get("mode") != "default" and "JupyterLab" not in r["name"]]
    measurements = fake_measurements(
        speed=rows, adherence=None, grading=None, flow=None, lora=None, quality=None,
        skipped={"adherence": "asked away", "default": "the learner's default mode runs with "
                 "--full", "browser": "the browser slider is measured with --full"},
        quick=True)
    text = (report.write_report(measurements, tmp_path) / "README.md").read_text()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == [heading for _, heading in report.SECTIONS]
    assert "(--quick" in text.splitlines()[0]
    assert "Skipped: asked away." in text
    assert "Default mode: Skipped: the learner's default mode runs with --full." in text
    assert "Slider in a real browser: Skipped: the browser slider is measured with --full." in text
    assert "Skipped: not measured in this run." in text  # grading, without a stated reason
    assert "no `flow_study.json`; `python -m course.tinysd.flow_study` writes it" in text
    assert "no `lora_study.json`; `python -m course.tinysd.lora_study` writes it" in text
    assert _images_of(text) == ["notebooks.png"]
    assert not (tmp_path / "adherence_steps.png").exists()


def _no_heavy_parts(monkeypatch, calls=None):
    """Replace the adherence and grading measurements by recorders of how they were asked."""
    calls = {} if calls is None else calls

    def fake_bench_adherence(**kwargs):
        calls["adherence"] = kwargs
        return fake_adherence()

    def fake_bench_grading(only=None):
        calls["grading"] = only
        return fake_measurements()["grading"]

    monkeypatch.setattr(adherence, "bench_adherence", fake_bench_adherence)
    monkeypatch.setattr(grading, "bench_grading", fake_bench_grading)
    return calls


def _fake_speed(monkeypatch) -> list:
    """Notebook runs and kernel timings replaced by fakes; returns the list of (notebook, fast)
    runs asked for."""
    ran = []
    monkeypatch.setattr(speed, "run_notebook",
                        lambda path, fast: ran.append((path.name, fast)) or (3.0, 300.0, None))
    for name in ("bench_forward_diffusion", "bench_widget_redraw", "bench_guidance_update",
                 "bench_adapter_update"):
        monkeypatch.setattr(speed, name, lambda repeats, name=name: {
            "name": name, "value": f"{repeats} repeats", "kind": "widget", "ms": 1.0})
    monkeypatch.setattr(speed, "bench_ddim_update", lambda repeats: [
        {"name": "bench_ddim_update", "value": f"{repeats} repeats", "kind": "widget", "ms": 1.0}])
    return ran


def test_quick_runs_the_small_version_of_every_part_and_writes_every_section(tmp_path,
                                                                             monkeypatch):
    readme = _readme_in(tmp_path, monkeypatch)
    calls = _no_heavy_parts(monkeypatch)
    ran = _fake_speed(monkeypatch)
    monkeypatch.setattr(speed, "bench_browser", pytest.fail)  # --full only
    monkeypatch.setattr(quality, "bench_quality", pytest.fail)  # --quality only
    flow = tmp_path / "flow_study.json"
    flow.write_text(json.dumps(fake_flow_study()))
    monkeypatch.setattr(records, "FLOW_STUDY", flow)
    folder = tmp_path / "quick"
    assert course_main(["bench", "--quick", "--report", str(folder), "--write-readme"]) == 0

    assert ran == [("00_welcome.ipynb", True), ("01_forward_noising.ipynb", True)]
    assert calls["adherence"] == {"device": "auto", **adherence.QUICK}
    assert calls["grading"] == grading.QUICK_GRADING
    text = (folder / "README.md").read_text()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == [heading for _, heading in report.SECTIONS]
    assert "_--quick: 4 prompts" in text and "_--quick: only 01_forward_noising.ipynb_" in text
    assert "the learner's default mode runs with --full" in text
    assert "| bench_widget_redraw | 5 repeats |" in text
    assert "Measured 2026-12-01" in text  # the flow study from the file given
    assert "stored table (`course/assets/scheduler_quality.json`)" in text
    for name in _images_of(text):
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
    measured = json.loads((folder / "measurements.json").read_text())
    assert measured["quick"] is True and measured["flow"]["study_seconds"] == 12.0
    table = readme.read_text()
    assert "| 00_welcome.ipynb (FAST) | 3.0 s, kernel peak 300 MB |" in table
    assert f"Full report: [`{folder}`]" in table
    assert "old quality" in table  # the scheduler table was not measured: left alone


def test_the_default_report_folder_is_dated_and_quick_ones_say_so():
    from types import SimpleNamespace

    args = SimpleNamespace(report=None, quick=False)
    assert cli.report_folder(args, "2026-12-07") == cli.REPORTS / "2026-12-07"
    args.quick = True
    assert cli.report_folder(args, "2026-12-07") == cli.REPORTS / "2026-12-07-quick"
    assert cli.REPORTS.parts[-2:] == ("bench", "reports")
    args.report = "elsewhere"
    assert str(cli.report_folder(args, "2026-12-07")) == "elsewhere"


def test_grading_rows_time_each_solution_notebook(monkeypatch):
    import course.grading as grading_package
    from course.grading import NotebookGrade

    graded = []

    def fake_grade(path):
        graded.append(path.name)
        return NotebookGrade(str(path), "01", tests=[{"name": "x", "score": 1.0,
                                                      "max_score": 2.0, "output": ""}],
                             notes=["a note"], seconds=4.25)

    monkeypatch.setattr(grading_package, "grade_notebook", fake_grade)
    rows = grading.bench_grading(("01_", "03_"))
    assert graded == ["01_forward_noising.ipynb", "03_ddim_schedulers.ipynb"]
    assert rows[0] == {"notebook": "01_forward_noising.ipynb", "seconds": 4.25, "score": 1.0,
                       "max_score": 2.0, "exercises": 1, "notes": ["a note"]}


def test_training_records_cover_every_bundled_model():
    rows = {row["model"]: row for row in records.training_records()}
    assert set(adherence.PIPELINES) | {"ddpm-shapes", "purple", "outline"} <= set(rows)
    assert rows["tiny-shapes-flow"]["objective"] == "flow"
    assert rows["tiny-shapes-flow"]["vae_from"] == "tiny-shapes"
    assert rows["ddpm-shapes"]["kind"] == "unet" and rows["purple"]["kind"] == "adapter"
    assert all(row["seconds"] > 0 and row["steps"] > 0 for row in rows.values())


def test_the_bundled_pipelines_are_the_registry_ones():
    assert adherence.PIPELINES == ("tiny-shapes", "tiny-shapes-early", "tiny-shapes-loose",
                                   "tiny-shapes-flow", "tiny-shapes-flow-logit-normal")


def test_a_small_real_adherence_run(tmp_path):
    result = adherence.bench_adherence(("tiny-shapes", "tiny-shapes-flow"), n_prompts=3,
                                       steps=(2, 3), scales=(1.0, 3.0), guidance_steps=2,
                                       device="cpu")
    pipes = result["pipelines"]
    assert pipes["tiny-shapes"]["samplers"] == ["DDIM", "DPM++ 2M"]
    assert pipes["tiny-shapes-flow"]["samplers"] == ["Euler (flow)"]
    for name, found in pipes.items():
        runs = [(r["sampler"], r["steps"]) for r in found["steps"]]
        assert runs == [(s, n) for s in found["samplers"] for n in (2, 3)], name
        assert [r["guidance"] for r in found["guidance"]] == [1.0, 3.0]
        for row in [*found["steps"], *found["guidance"], found["empty"]]:
            assert row["n"] == 3
            assert all(0 <= row[a] <= 1 for a in adherence.ATTRIBUTES)
            assert row["all"] <= min(row["color"], row["shape"], row["position"])
    folder = report.write_report(fake_measurements(adherence=result), tmp_path)
    text = (folder / "README.md").read_text()
    assert "### tiny-shapes (" in text and "| Euler (flow) |" in text
    assert (folder / "adherence_steps.png").read_bytes().startswith(PNG_SIGNATURE)


def test_full_adds_the_default_mode_and_the_browser_slider(tmp_path, monkeypatch):
    _no_heavy_parts(monkeypatch)
    ran = _fake_speed(monkeypatch)
    monkeypatch.setattr(speed, "bench_browser", lambda: [{
        "name": "slider to new image in JupyterLab (lesson 01)", "value": "median 250 ms",
        "kind": "widget", "ms": 250.0}])
    folder = tmp_path / "full"
    assert course_main(["bench", "--quick", "--full", "--notebooks", "01",
                        "--report", str(folder)]) == 0
    assert ran == [("01_forward_noising.ipynb", True), ("01_forward_noising.ipynb", False)]
    text = (folder / "README.md").read_text()
    assert "| 01_forward_noising.ipynb | 3.0 s | 300 MB | 3.0 s | 300 MB |" in text
    assert "| slider to new image in JupyterLab (lesson 01) | median 250 ms |" in text
    assert "Skipped" not in text.split("## Prompt adherence")[0]
