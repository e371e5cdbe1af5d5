"""Text-to-image pipelines: saving and loading ``save_pretrained`` folders, safetensors only.

A folder is what diffusers writes for any Stable Diffusion checkpoint::

    model_index.json                    which class each part is
    vae/, text_encoder/, unet/          config.json + model.safetensors (float16 weights)
    tokenizer/                          vocab.json, merges.txt, tokenizer_config.json
    scheduler/scheduler_config.json
    training.json                       the recipe and the record of the run that made it

so ``StableDiffusionPipeline.from_pretrained(folder)`` reads it like a hub checkpoint, offline,
with nothing from this package. Weights are stored in float16 (half the size) and computed in
float32 unless a dtype is asked for.

A flow-matching pipeline (tiny-shapes-flow) stores a ``FlowMatchEulerDiscreteScheduler``, which
``StableDiffusionPipeline.__call__`` cannot drive as diffusers ships it: see ``flow_ready``, which
the loaders here apply.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .registry import ENTRIES, USER_DIR, verify

#: where ``python -m course train tiny-sd`` writes unless told otherwise
DEFAULT_OUTPUT = USER_DIR / "tiny-shapes"
RECORD_NAME = "training.json"
#: a folder holding a stand-in pipeline (``course.tinysd.standin``): ``real_pipeline`` loads it
#: instead of the hub's model, on whatever device there is
STANDIN_ENV = "COURSE_SD_STANDIN"


def save_tiny_pipeline(pipe, output, record: dict | None = None) -> Path:
    """Write ``pipe`` into the folder ``output`` as float16 safetensors (``save_pretrained``) and
    ``record`` as ``training.json``. Afterwards ``pipe`` is back in its dtype, with the float16-
    rounded weights: exactly what loading the folder gives."""
    from ..tinysd.vocab import write_tokenizer

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
    # transformers writes the dtype of the weights as the one to load in ("dtype": "float16")
    # and loads in it when none is asked for, while diffusers loads its own parts in float32:
    # the first matmul of text states and U-Net would then fail. Float16 weights with a float32
    # config load in float32 everywhere, as the pipeline computes.
    pipe.text_encoder.config.dtype = torch.float32
    pipe.text_encoder.config.save_pretrained(str(output / "text_encoder"))
    # the tokenizer from the course's one vocabulary, in the files every transformers version
    # reads (5.x writes only tokenizer.json, which 4.x's CLIPTokenizer cannot read)
    shutil.rmtree(output / "tokenizer")
    write_tokenizer(output / "tokenizer", max_length=pipe.tokenizer.model_max_length)
    if record is not None:
        (output / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    _readable_by_all(output)
    return output


def _readable_by_all(folder: Path) -> None:
    """Let every account read what ``folder`` holds, as in a cloned repository.

    The libraries' ``save_pretrained`` writes its weights through a private temporary file, so
    they land owner-only (0600); the grader's sandbox, which runs a learner's notebook as another
    user, could then not load a freshly trained model.
    """
    for path in folder.rglob("*"):
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def default_path() -> Path:
    """The bundled "tiny-shapes" when the package ships it, else the folder training writes."""
    bundled = ENTRIES["tiny-shapes"].local_path()
    for path in (bundled, DEFAULT_OUTPUT):
        if (path / "model_index.json").is_file():
            return path
    raise FileNotFoundError(
        f"no tiny Stable Diffusion at {bundled} or {DEFAULT_OUTPUT}: train one with "
        "`python -m course train tiny-sd` (957 s on a 2-core CPU) or pass its folder")


def load_tiny_pipeline(path=None, device=None, dtype=None):
    """A ``StableDiffusionPipeline`` from a folder (default: ``default_path()``), offline.

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
    flow_ready(pipe.scheduler)
    return pipe.to(device)


def flow_ready(scheduler):
    """Let ``StableDiffusionPipeline.__call__`` sample with a ``FlowMatchEulerDiscreteScheduler``;
    returns ``scheduler``, changed in place when it needed it.

    ``__call__`` scales its start latents by ``scheduler.init_noise_sigma``, which every
    DDPM-family scheduler defines and the flow scheduler does not (diffusers' SD3 and FLUX
    pipelines draw their start noise without it), so sampling stops with an AttributeError
    before the first step. Flow sampling starts at sigma = 1, x_1 = eps ~ N(0, I): the scale is
    1. Everything else ``__call__`` does is right for flow: ``scale_model_input`` is called only
    when the scheduler has one (it has none: the U-Net takes x_sigma as it is), the U-Net gets
    the scheduler's ``timesteps`` = 1000 sigma, as in training, and ``step`` takes the Euler step
    x + (sigma_next - sigma) v of the guided velocity.
    """
    if not hasattr(scheduler, "init_noise_sigma"):
        scheduler.init_noise_sigma = 1.0  # x_1 = eps: pure noise, unscaled
    return scheduler


def training_info(path=None) -> dict:
    """The ``training.json`` stored with a pipeline folder (recipe, steps, seconds, device)."""
    path = Path(path) if path is not None else default_path()
    return json.loads((path / RECORD_NAME).read_text())


def load_pipeline(name: str = "tiny-shapes", device=None, dtype=None):
    """A ``StableDiffusionPipeline`` by registry name, folder path, or hub id (online, or offline
    from the hub's local cache; else a ``hub.HubUnavailable`` saying how to get it, at once).

    "tiny-shapes" loads the bundled copy when the package ships one, else the folder training
    writes (``DEFAULT_OUTPUT``).
    """
    entry = ENTRIES.get(name)
    if entry is not None and entry.kind != "pipeline":
        raise ValueError(f"{name!r} is a registered {entry.kind}, not a pipeline")
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
    from .hub import hub_access

    bundled = ", ".join(sorted(n for n, e in ENTRIES.items()
                               if e.kind == "pipeline" and not e.source.startswith("hub:")))
    access = hub_access(repo, revision, alternatives=bundled)  # offline, not cached: at once
    from diffusers import StableDiffusionPipeline

    from ..device import pick_device, pick_dtype

    device = pick_device(device or "auto")
    pipe = StableDiffusionPipeline.from_pretrained(
        repo, revision=revision, use_safetensors=True, **access,
        **{_dtype_keyword(): dtype or pick_dtype(device)})
    return pipe.to(device)


def real_pipeline(name: str = "sd-1.5", dtype=None):
    """(pipeline, None) when real Stable Diffusion can run here, else (None, the reason).

    ``name``: a registry name or a hub id. Real models need a CUDA GPU, and the hub or a copy in
    its local cache; they load on the GPU in ``dtype`` (default float16). With
    ``COURSE_SD_STANDIN`` set to a stand-in folder, that folder loads instead (float32 on a CPU),
    so the lessons' real-SD cells run their code everywhere: the test suite does this.
    """
    from .hub import HubUnavailable

    standin = os.environ.get(STANDIN_ENV)
    if standin:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = load_pipeline(standin, device=device,
                             dtype=(dtype or torch.float16) if device == "cuda" else torch.float32)
        return pipe, None
    if not torch.cuda.is_available():
        return None, "it needs a CUDA GPU (this run has none)"
    try:
        pipe = load_pipeline(name, device="cuda", dtype=dtype or torch.float16)
    except HubUnavailable as error:
        return None, error.reason
    pipe.set_progress_bar_config(disable=True)
    return pipe, None


def _dtype_keyword() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (the old name warns)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
