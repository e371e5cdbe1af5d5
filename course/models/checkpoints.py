"""TinyUNet checkpoints: one ``.safetensors`` file each, never unpickled.

A checkpoint holds float16 weights (half the size; the network computes in float32 after
loading) and, in its metadata, the JSON of the configuration that rebuilds the network
(``config``) and of the recipe that trained it (``info``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..nets import TinyUNet, TinyUNetConfig
from .registry import ENTRIES, names, verify


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
    """The file of a registered checkpoint ("ddpm-shapes", its digest checked), or the given
    path if it exists."""
    name_or_path = str(name_or_path)
    entry = ENTRIES.get(name_or_path)
    if entry is not None and entry.kind == "unet":
        return verify(entry)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {name_or_path!r}: bundled names are "
                                f"{', '.join(names('unet'))}, or give the path of a "
                                ".safetensors file")
    return path


def checkpoint_info(name_or_path="ddpm-shapes") -> dict:
    """The training record stored with a checkpoint (recipe, seconds, final loss, device)."""
    with safe_open(str(checkpoint_path(name_or_path)), framework="pt") as handle:
        return json.loads(handle.metadata().get("info", "{}"))


def load_unet(name_or_path="ddpm-shapes", device=None) -> TinyUNet:
    """A registered TinyUNet by name ("ddpm-shapes") or from a .safetensors path, in eval mode.
    Loading is strict: a missing or unexpected weight name is an error."""
    path = checkpoint_path(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        config = TinyUNetConfig.from_dict(json.loads(handle.metadata()["config"]))
    model = TinyUNet(config)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device or "cpu").eval()
