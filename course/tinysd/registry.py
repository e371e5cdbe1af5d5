"""Named text-to-image pipelines: the bundled tiny one, any local folder, or a hub id.

An entry says where a pipeline comes from and how to know it is the right one:

- ``source``: "package:<folder>" (inside ``course/assets``), a local path, or "hub:<repo id>";
- ``sha256``: a digest over the folder's files (relative paths and contents, in sorted order),
  so a damaged or swapped file is caught before anything is loaded; ``revision`` pins a hub
  checkpoint to a commit instead;
- ``size``: bytes on disk (or to download).

``python -m course.tinysd.registry DIR`` prints the digest and size of a trained folder, to paste
into ``ENTRIES`` when it is bundled.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    source: str
    sha256: str | None = None  # of a folder, see ``folder_digest``; None: not checked
    revision: str | None = None  # of a hub repository
    size: int | None = None  # bytes
    description: str = ""

    def local_path(self) -> Path | None:
        """The folder of a packaged or local entry; None for a hub id."""
        if self.source.startswith("hub:"):
            return None
        if self.source.startswith("package:"):
            return ASSETS / self.source.removeprefix("package:")
        return Path(self.source).expanduser()


ENTRIES = {
    # sha256 and size are filled in from ``python -m course.tinysd.registry`` once the trained
    # folder is copied to course/assets/tiny_shapes; until then it is not checked
    "tiny-shapes": PipelineEntry(
        name="tiny-shapes",
        source="package:tiny_shapes",
        sha256="43cc09859afbab40f67548600d12bd7c531a7f8af1341ea5812568344635439d",
        size=3_982_091,
        description="tiny Stable Diffusion of the captioned-shapes world (32x32, f=2 latents)",
    ),
    # Two weaker checkpoints of the same pipeline, for lesson 05's "where guidance pays":
    # trained with `python -m course.tinysd.train --vae-from tiny-shapes` and the flags below
    # (each folder's training.json holds the whole recipe).
    "tiny-shapes-early": PipelineEntry(
        name="tiny-shapes-early",
        source="package:tiny_shapes_early",
        sha256="b140129a5d168a49fee5541b7d09c9f4986e500cf26cf314092e4c24c9f60f4e",
        size=3_981_779,
        description="tiny-shapes' training stopped at step 250 of 1000 (--stop-after 250)",
    ),
    "tiny-shapes-loose": PipelineEntry(
        name="tiny-shapes-loose",
        source="package:tiny_shapes_loose",
        sha256="6ab59260cc15df4267eb533e3be176cd4f783471865b084605f0a7ff75b4ee7a",
        size=3_981_977,
        description="tiny-shapes trained on loose captions: 35% swapped for another "
                    "combination's (--caption-noise 0.35)",
    ),
    "sd-1.5": PipelineEntry(
        name="sd-1.5",
        source="hub:stable-diffusion-v1-5/stable-diffusion-v1-5",
        size=5_500_000_000,  # the float16 safetensors variant, roughly
        description="Stable Diffusion 1.5 from the Hugging Face hub (needs a network and a GPU)",
    ),
}


def folder_digest(folder) -> tuple[str, int]:
    """(sha256 hex, total bytes) over every file under ``folder``: for each file in sorted
    order, its relative path (POSIX) then its bytes."""
    folder = Path(folder)
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return digest.hexdigest(), size


def verify(entry: PipelineEntry) -> Path:
    """The entry's local folder, after checking its digest (when the entry has one)."""
    path = entry.local_path()
    if path is None or not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{entry.name}: no pipeline folder at {path}")
    if entry.sha256 is not None:
        found, _ = folder_digest(path)
        if found != entry.sha256:
            raise ValueError(f"{entry.name}: files at {path} do not match the registry "
                             f"(sha256 {found}, expected {entry.sha256}); reinstall the package "
                             "or retrain with `python -m course.tinysd.train`")
    return path


def load_pipeline(name: str = "tiny-shapes", device=None, dtype=None):
    """A ``StableDiffusionPipeline`` by registry name, folder path, or hub id (online only).

    "tiny-shapes" loads the bundled copy when the package ships one, else the folder training
    writes (``~/.cache/diffusion-course/tiny-shapes``).
    """
    from .bundle import load_tiny_pipeline

    entry = ENTRIES.get(name)
    if entry is not None and entry.local_path() is not None:
        if (entry.local_path() / "model_index.json").is_file():
            return load_tiny_pipeline(verify(entry), device, dtype)
        if name == "tiny-shapes":
            return load_tiny_pipeline(None, device, dtype)  # the trained copy, or a clear error
    if Path(name).expanduser().is_dir():
        return load_tiny_pipeline(Path(name).expanduser(), device, dtype)
    repo = entry.source.removeprefix("hub:") if entry is not None else name
    return _load_from_hub(repo, entry.revision if entry is not None else None, device, dtype)


def _load_from_hub(repo: str, revision: str | None, device, dtype):
    from diffusers import StableDiffusionPipeline

    from ..device import hub_reachable, pick_device, pick_dtype
    from .bundle import _dtype_keyword

    if not hub_reachable():
        known = ", ".join(sorted(ENTRIES))
        raise ConnectionError(f"{repo!r} is not a folder here and the Hugging Face hub cannot be "
                              f"reached (offline); registered names: {known}")
    device = pick_device(device or "auto")
    pipe = StableDiffusionPipeline.from_pretrained(
        repo, revision=revision, use_safetensors=True,
        **{_dtype_keyword(): dtype or pick_dtype(device)})
    return pipe.to(device)


#: a folder holding a stand-in pipeline (``standin.save_standin``): ``real_pipeline`` loads it
#: instead of the hub's model, on whatever device there is
STANDIN_ENV = "COURSE_SD_STANDIN"


def real_pipeline(name: str = "sd-1.5", dtype=None):
    """(pipeline, None) when real Stable Diffusion can run here, else (None, the reason).

    ``name``: a registry name or a hub id. Real models need a CUDA GPU and the hub; they load on
    the GPU in ``dtype`` (default float16). With ``COURSE_SD_STANDIN`` set to a stand-in folder,
    that folder loads instead (float32 on a CPU), so the lessons' real-SD cells run their code
    everywhere: the test suite does this.
    """
    import torch

    from ..device import hub_reachable

    standin = os.environ.get(STANDIN_ENV)
    if standin:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = load_pipeline(standin, device=device,
                             dtype=(dtype or torch.float16) if device == "cuda" else torch.float32)
        return pipe, None
    if not torch.cuda.is_available():
        return None, "it needs a CUDA GPU (this run has none)"
    if not hub_reachable():
        return None, "it needs the Hugging Face hub (this run is offline)"
    pipe = load_pipeline(name, device="cuda", dtype=dtype or torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe, None


if __name__ == "__main__":
    for folder in sys.argv[1:] or [str(ASSETS / "tiny_shapes")]:
        sha, nbytes = folder_digest(folder)
        print(f'{folder}: sha256="{sha}", size={nbytes}  ({nbytes / 1e6:.2f} MB)')
