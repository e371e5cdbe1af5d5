"""Saving and loading tiny Stable Diffusion: a ``save_pretrained`` folder, safetensors only.

The folder is what diffusers writes for any Stable Diffusion checkpoint::

    model_index.json                    which class each part is
    vae/, text_encoder/, unet/          config.json + model.safetensors (float16 weights)
    tokenizer/                          vocab.json, merges.txt, tokenizer_config.json, ...
    scheduler/scheduler_config.json
    training.json                       the recipe and the record of the run that made it

so ``StableDiffusionPipeline.from_pretrained(folder)`` reads it like a hub checkpoint, offline.
Weights are stored in float16 (half the size) and computed in float32 on a CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .vocab import VOCAB_DIR

#: the copy shipped inside the package, once trained (see ``registry.py``)
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_shapes"
#: where ``python -m course.tinysd.train`` writes unless told otherwise
DEFAULT_OUTPUT = Path("~/.cache/diffusion-course/tiny-shapes").expanduser()
RECORD_NAME = "training.json"


def save_tiny_pipeline(pipe, output, record: dict | None = None) -> Path:
    """Write ``pipe`` into the folder ``output`` as float16 safetensors (``save_pretrained``) and
    ``record`` as ``training.json``. Afterwards ``pipe`` is back in its dtype, with the float16-
    rounded weights: exactly what loading the folder gives."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    networks = [pipe.vae, pipe.text_encoder, pipe.unet]
    dtypes = [network.dtype for network in networks]
    # torch's own Module.to casts floating-point tensors only; diffusers' override of it also
    # warns about float32-only modules, which these networks do not have
    for network in networks:
        torch.nn.Module.to(network, dtype=torch.float16)
    try:
        pipe.save_pretrained(str(output), safe_serialization=True)
    finally:
        for network, dtype in zip(networks, dtypes):
            torch.nn.Module.to(network, dtype=dtype)
    # transformers 5 writes only tokenizer.json; 4.x's CLIPTokenizer reads these two
    for name in ("vocab.json", "merges.txt"):
        if not (output / "tokenizer" / name).is_file():
            shutil.copy(VOCAB_DIR / name, output / "tokenizer" / name)
    if record is not None:
        (output / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return output


def default_path() -> Path:
    """The bundled pipeline when the package ships one, else the one training writes."""
    for path in (BUNDLED_DIR, DEFAULT_OUTPUT):
        if (path / "model_index.json").is_file():
            return path
    raise FileNotFoundError(
        f"no tiny Stable Diffusion at {BUNDLED_DIR} or {DEFAULT_OUTPUT}: train one with "
        "`python -m course.tinysd.train` (about 20 minutes on a 2-core CPU) or pass its folder")


def load_tiny_pipeline(path=None, device=None, dtype=None):
    """The tiny ``StableDiffusionPipeline`` from a folder (default: ``default_path()``), offline.

    device: "cpu", "cuda", ... (default: ``course.device.pick_device("auto")``).
    dtype: default float32 on a CPU, float16 on a GPU (``course.device.pick_dtype``).
    """
    from diffusers import StableDiffusionPipeline

    from ..device import pick_device, pick_dtype

    path = Path(path) if path is not None else default_path()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} holds no pipeline (no model_index.json)")
    if any(path.rglob("*.bin")) or any(path.rglob("*.pt")) or any(path.rglob("*.pkl")):
        raise ValueError(f"{path} holds pickle files; only safetensors are read")
    device = pick_device(device or "auto")
    dtype = dtype or pick_dtype(device)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, **{_dtype_keyword(): dtype})
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def training_info(path=None) -> dict:
    """The ``training.json`` stored with a pipeline folder (recipe, steps, seconds, device)."""
    path = Path(path) if path is not None else default_path()
    return json.loads((path / RECORD_NAME).read_text())


def _dtype_keyword() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (the old name warns)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
