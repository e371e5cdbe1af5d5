"""What was measured once and stored with the models: training times (each bundled pipeline's
``training.json``, the DDPM checkpoint's metadata, each adapter's ``training.json``), the LoRA
study (``course/assets/lora_study.json``) and the flow-versus-DDPM study
(``course/assets/flow_study.json``). Read, never re-measured: they take from minutes to hours.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...models.registry import ASSETS, ENTRIES

LORA_STUDY = ASSETS / "lora_study.json"
FLOW_STUDY = ASSETS / "flow_study.json"
LORA_COMMAND = "python -m course.tinysd.lora_study"
FLOW_COMMAND = "python -m course.tinysd.flow_study"


def _training_row(name: str, kind: str, record: dict) -> dict:
    """One model's training: steps, batch, seconds, and where it ran."""
    recipe = record.get("recipe", {})
    # the steps taken: a run stopped early (--stop-after) records fewer than its recipe asks
    steps = record.get("denoiser", {}).get("steps") or recipe.get("steps")
    row = {"model": name, "kind": kind, "steps": steps,
           "batch_size": recipe.get("batch_size"), "seconds": record.get("train_seconds"),
           "device": record.get("device"), "threads": record.get("threads"),
           "torch": record.get("torch") or record.get("versions", {}).get("torch")}
    if "vae" in record:  # a pipeline: its autoencoder stage, then its denoiser stage
        row["vae_seconds"] = record["vae"].get("seconds")
        row["denoiser_seconds"] = record.get("denoiser", {}).get("seconds")
        row["vae_from"] = record["vae"].get("from")
        row["objective"] = recipe.get("objective", "v-prediction")
    return row


def training_records() -> list[dict]:
    """One row per bundled model with a stored training record, in the registry's order."""
    from ...models.checkpoints import checkpoint_info

    rows = []
    for name, entry in ENTRIES.items():
        path = entry.local_path()
        if path is None or not entry.source.startswith("package:") or not path.exists():
            continue
        if entry.kind == "unet":
            info = checkpoint_info(name)
            if info:
                rows.append(_training_row(name, entry.kind, info))
        elif (path / "training.json").is_file():
            record = json.loads((path / "training.json").read_text(encoding="utf-8"))
            rows.append(_training_row(name, entry.kind, record))
    return rows


def load_study(path: Path) -> dict | None:
    """A stored study, or None when it has not been measured (no file)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def lora_markdown(study: dict) -> str:
    """The LoRA study's tables: the bundled adapters' goals, Q4 (layers and rank), LoRA against
    full fine-tuning, and the common mistakes."""
    lines = [f"Measured {study['date']} on {study['device']} ({study['sampling']}); "
             f"base adherence {study['base_adherence']:.0%}.", ""]
    goals = study.get("goals") or {}
    if goals:
        lines += ["| bundled adapter | its goal | base with it | forgetting | U-Net share | "
                  "file |", "|---|---|---|---|---|---|"]
        for name in ("purple", "outline"):
            if name in goals:
                goal = goals[name]
                share = goals.get("unet_shares", {}).get(name)
                kb = goals.get("file_kb", {}).get(name)
                lines.append(f"| {name} | {_pct(goal['new']['all'])} | "
                             f"{_pct(goal['base']['all'])} | {goal['forgetting']:.1%} | "
                             f"{'-' if share is None else f'{share:.2%}'} | "
                             f"{'-' if kb is None else f'{kb:.0f} kB'} |")
        lines.append("")
    tables = (("Q4: which layers, which rank (outline style)", study.get("q4") or []),
              ("LoRA against full fine-tuning (purple)",
               [{**row, "label": label} for label, row in (study.get("full_vs_lora") or {})
                .items()]),
              ("common mistakes (purple)",
               [{**row, "label": label} for label, row in (study.get("mistakes") or {})
                .items()]))
    for title, rows in tables:
        if not rows:
            continue
        lines += [f"{title}:", "", "| row | goal | base | forgetting | trainable U-Net share | "
                  "file | training |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            label = row.get("label") or f"{row['target_set']}, r = {row['rank']}"
            lines.append(f"| {label} | {_pct(row.get('new'))} | {_pct(row.get('base'))} | "
                         f"{_pct(row.get('forgetting'))} | {row.get('unet_share', 0):.2%} | "
                         f"{row.get('file_bytes', 0) / 1024:.0f} kB | "
                         f"{row.get('seconds', 0):.0f} s |")
        lines.append("")
    return "\n".join(lines).rstrip()


def flow_markdown(study: dict) -> str:
    """The flow study's tables, as lesson 08 prints them, under where they were measured."""
    from ...tinysd.flow_study import markdown

    return (f"Measured {study['date']} on {study['device']} ({study['machine']}), "
            f"{study.get('study_seconds', '?')} s.\n\n{markdown(study)}")
