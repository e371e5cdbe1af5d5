"""Bundled checkpoints: read and written as safetensors only, never unpickled.

A checkpoint is one ``.safetensors`` file: float16 weights (half the size; the networks compute
in float32 after loading) and, in its metadata, the JSON of the configuration that rebuilds the
network and of the recipe that trained it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..nets import TinyUNet, UNetConfig

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = {"ddpm-shapes": "ddpm_shapes.safetensors"}


def save_unet(model: TinyUNet, path, info: dict) -> Path:
    """Write ``model`` as float16 safetensors with its config and ``info`` in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float16).contiguous()
               for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(model.config.to_dict()), "info": json.dumps(info)}
    save_file(weights, str(path), metadata=metadata)
    return path


def checkpoint_path(name_or_path) -> Path:
    """The file of a bundled checkpoint name ("ddpm-shapes"), or the given path if it exists."""
    name_or_path = str(name_or_path)
    path = BUNDLED_DIR / BUNDLED[name_or_path] if name_or_path in BUNDLED else Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(BUNDLED))
        raise FileNotFoundError(f"no checkpoint {name_or_path!r}: bundled names are {known}, "
                                f"or give the path of a .safetensors file")
    return path


def checkpoint_info(name_or_path="ddpm-shapes") -> dict:
    """The training record stored with a checkpoint (recipe, seconds, final loss, device)."""
    with safe_open(str(checkpoint_path(name_or_path)), framework="pt") as handle:
        return json.loads(handle.metadata().get("info", "{}"))


def load_unet(name_or_path="ddpm-shapes", device=None) -> TinyUNet:
    """A bundled TinyUNet by name ("ddpm-shapes") or from a .safetensors path, in eval mode."""
    path = checkpoint_path(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        config = UNetConfig.from_dict(json.loads(handle.metadata()["config"]))
    model = TinyUNet(config)
    weights = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(weights)
    return model.to(device or "cpu").eval()
