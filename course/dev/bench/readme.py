"""The README's benchmark sections, rewritten between their markers by ``--write-readme``."""

from __future__ import annotations

from pathlib import Path

from .machine import machine

ROOT = Path(__file__).resolve().parents[3]
#: README sections the benchmark rewrites: speed and memory, and sample quality (slow to measure)
SECTIONS = {"speed": "bench", "quality": "quality"}


def to_markdown(rows: list[dict], when: str, report: str | None = None) -> str:
    """The speed table: where and when it was measured, a link to the full report, the rows."""
    link = f" Full report: [`{report}`]({report})." if report else ""
    lines = [f"Measured {when} on {machine()}.{link}", "", "| what | measured |", "|---|---|"]
    lines += [f"| {r['name']} | {r['value']} |" for r in rows]
    return "\n".join(lines)


def write_readme(table: str, section: str = "speed", readme: Path = ROOT / "README.md") -> None:
    """Replace one benchmark section of the README (between its start and end markers)."""
    start, end = f"<!-- {SECTIONS[section]}:start -->", f"<!-- {SECTIONS[section]}:end -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")
