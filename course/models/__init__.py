"""The one model layer: every model the course names, and reading and writing it.

- ``registry``: the table of names (TinyUNet checkpoints, pipeline folders, hub ids, LoRA
  adapters) with their digests; ``ASSETS`` (the package's files) and ``USER_DIR`` (where
  training writes, ``$COURSE_HOME``);
- ``checkpoints``: a TinyUNet as one safetensors file (``load_unet("ddpm-shapes")``);
- ``pipelines``: a ``StableDiffusionPipeline`` folder (``load_pipeline("tiny-shapes")``, or a hub
  id when online; ``real_pipeline`` for Stable Diffusion itself on a GPU);
- ``hub``: a hub id online, from the local cache offline, or an error at once that says how to
  get the model.
"""

from .checkpoints import checkpoint_info, checkpoint_path, load_unet, save_unet
from .pipelines import (
    load_pipeline,
    load_tiny_pipeline,
    real_pipeline,
    save_tiny_pipeline,
    training_info,
)
from .registry import ASSETS, ENTRIES, USER_DIR, Entry, verify

__all__ = ["ASSETS", "ENTRIES", "USER_DIR", "Entry", "checkpoint_info", "checkpoint_path",
           "load_pipeline", "load_tiny_pipeline", "load_unet", "real_pipeline",
           "save_tiny_pipeline", "save_unet", "training_info", "verify"]
