"""Every model the course names, where it lives, and how to know it is the right one.

One table, ``ENTRIES`` (name -> ``Entry``), for the three kinds of model the course ships:

- "unet": a single-file TinyUNet checkpoint (``checkpoints.py``): "ddpm-shapes";
- "pipeline": a ``StableDiffusionPipeline`` folder (``pipelines.py``): "tiny-shapes",
  "tiny-shapes-early", "tiny-shapes-loose", "tiny-shapes-flow" (its denoiser trained with flow
  matching), and hub checkpoints such as "sd-1.5";
- "adapter": a LoRA adapter folder in diffusers' format (``course.lora``): "purple", "outline".

An entry's ``source`` is "package:<path>" (inside ``ASSETS``), a local path, or "hub:<repo id>";
its ``sha256`` is a digest of the file, or of the folder's files (relative paths and contents,
in sorted order), so a damaged or swapped file is caught before anything is loaded; ``revision``
pins a hub checkpoint to a commit instead.

Two places on disk: ``ASSETS``, inside the package (read, never written), and ``USER_DIR``
(``$COURSE_HOME``, default ``~/.cache/diffusion-course``), where training writes every model.

``python -m course.models PATH...`` prints the digest and size of a trained file or
folder, to paste into ``ENTRIES`` when it is bundled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: the package's own files: checkpoints, pipelines, adapters, the tokenizer's vocabulary, tables
ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: where training writes by default: the installed package is never written to
USER_DIR = Path(os.environ.get("COURSE_HOME", "~/.cache/diffusion-course")).expanduser()
KINDS = ("unet", "pipeline", "adapter")


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # one of KINDS
    source: str
    sha256: str | None = None  # of the file or folder, see ``digest``; None: not checked
    revision: str | None = None  # of a hub repository
    size: int | None = None  # bytes on disk (or to download)
    description: str = ""

    def local_path(self) -> Path | None:
        """The file or folder of a packaged or local entry; None for a hub id."""
        if self.source.startswith("hub:"):
            return None
        if self.source.startswith("package:"):
            return ASSETS / self.source.removeprefix("package:")
        return Path(self.source).expanduser()


ENTRIES = {entry.name: entry for entry in [
    Entry(
        name="ddpm-shapes", kind="unet",
        source="package:ddpm_shapes.safetensors",
        sha256="8ac707707e58067968b4ee39f4c40c6a809fdb42ea84e3b17a7984739b73a9dc",
        size=2_268_326,
        description="TinyUNet trained with DDPM on the shapes world (32x32 pixels)",
    ),
    Entry(
        name="tiny-shapes", kind="pipeline",
        source="package:tiny_shapes",
        sha256="3f2ea40f321a863a9e7603cb28a527a06ba46de01f02e91b4d38a7d4813d3fb1",
        size=3_967_036,
        description="tiny Stable Diffusion of the captioned-shapes world (32x32, f=2 latents)",
    ),
    # Two weaker checkpoints of the same pipeline, for lesson 05's "where guidance pays":
    # trained with `python -m course train tiny-sd --vae-from tiny-shapes` and the flags below
    # (each folder's training.json holds the whole recipe).
    Entry(
        name="tiny-shapes-early", kind="pipeline",
        source="package:tiny_shapes_early",
        sha256="00d96e3ef4ab614452e2674dd8b88103dc38643b40a7b51aef4606da1d01606c",
        size=3_966_724,
        description="tiny-shapes' training stopped at step 250 of 1000 (--stop-after 250)",
    ),
    Entry(
        name="tiny-shapes-loose", kind="pipeline",
        source="package:tiny_shapes_loose",
        sha256="da00cd5dcb9b7b14024c5375745acb0c675bdd377d760bd50d0945521eef5ae9",
        size=3_966_922,
        description="tiny-shapes trained on loose captions: 35% swapped for another "
                    "combination's (--caption-noise 0.35)",
    ),
    # The same denoiser and budget as tiny-shapes' stage 2, on its autoencoder, trained with
    # flow matching instead (`python -m course train tiny-sd-flow`; training.json: the recipe).
    Entry(
        name="tiny-shapes-flow", kind="pipeline",
        source="package:tiny_shapes_flow",
        sha256="56195b8ed39502086a60edb580d17e9506e23f5bc128a124575673b7a3fdc478",
        size=3_966_992,
        description="tiny-shapes' denoiser trained with flow matching (velocity eps - z0, "
                    "logit-normal sigmas), sampled with FlowMatchEulerDiscreteScheduler",
    ),
    Entry(
        name="sd-1.5", kind="pipeline",
        source="hub:stable-diffusion-v1-5/stable-diffusion-v1-5",
        size=5_500_000_000,  # the float16 safetensors variant, roughly
        description="Stable Diffusion 1.5 from the Hugging Face hub (needs a network and a GPU)",
    ),
    Entry(
        name="purple", kind="adapter",
        source="package:adapters/purple",
        sha256="4ff02588b5a3efe32348e9213b705bf336250370276baf098828f8c72d82a06c",
        size=48_296,
        description="LoRA on tiny-shapes: a new colour word, RGB (150, 60, 210)",
    ),
    Entry(
        name="outline", kind="adapter",
        source="package:adapters/outline",
        sha256="3be9f704062c8c3d48b8914dfe589c8c7b9140afe3ae2d9fe68fe8570d8b460c",
        size=36_581,
        description="LoRA on tiny-shapes: shapes drawn as ~2 px outlines, no trigger word",
    ),
]}


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted: ``names("adapter") == ["outline", "purple"]``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return sorted(name for name, entry in ENTRIES.items() if entry.kind == kind)


def digest(path) -> tuple[str, int]:
    """(sha256 hex, total bytes) of a file, or over every file under a folder: for each file in
    sorted order, its relative path (POSIX) then its bytes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    sha, size = hashlib.sha256(), 0
    for file in files:
        if file != path:
            sha.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
                size += len(block)
    return sha.hexdigest(), size


def verify(entry: Entry) -> Path:
    """The entry's local file or folder, after checking its digest (when the entry has one)."""
    path = entry.local_path()
    if path is None or not path.exists():
        raise FileNotFoundError(f"{entry.name}: nothing at {path}")
    if entry.sha256 is not None:
        found, _ = digest(path)
        if found != entry.sha256:
            raise ValueError(f"{entry.name}: files at {path} do not match the registry "
                             f"(sha256 {found}, expected {entry.sha256}); reinstall the package "
                             "or retrain it (`python -m course train ...`)")
    return path

