"""The benchmark's README plumbing (the measurements themselves are reported, never asserted)."""

import pytest

from course import bench

README = """# title

<!-- bench:start -->
old speed
<!-- bench:end -->

text between

<!-- quality:start -->
old quality
<!-- quality:end -->
"""


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


def test_quality_only_measures_and_writes_only_the_quality_table(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    rows = [{"name": "lesson 02 model: DDPM, 1000 steps (2 images)", "value": "50.0% clean"}]
    monkeypatch.setattr(bench, "bench_quality", lambda: rows)
    monkeypatch.setattr(bench, "bench_notebooks", pytest.fail)  # must not run
    original = bench.write_readme
    monkeypatch.setattr(bench, "write_readme",
                        lambda table, section: original(table, section, readme))
    assert bench.main(["--quality-only", "--write-readme"]) == 0
    text = readme.read_text()
    assert "| lesson 02 model: DDPM, 1000 steps (2 images) | 50.0% clean |" in text
    assert "old speed" in text
    assert "50.0% clean" in capsys.readouterr().out
