"""Bundled checkpoints: read and written as safetensors only, never unpickled.

A checkpoint is one ``.safetensors`` file: float16 weights (half the size; the networks compute
in float32 after loading) and, in its metadata, the JSON of the configuration that rebuilds the
network and of the recipe that trained it.

Checkpoints written before the U-Net was organised into typed blocks (``DownBlock``, ``MidBlock``,
``UpBlock``) name their weights by the old flat layout (``down.4.attn.to_qkv.weight``,
``mid_res1.conv1.weight``, ...), the bundled one included. ``legacy_key_map`` spells out, for a
given config, which new name each old one is; ``load_unet`` applies it, so such files load
unchanged and compute exactly what they did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..nets import TinyUNet, UNetConfig
from ..tinysd.registry import ENTRIES as PIPELINES  # noqa: F401 - names and digests
from ..tinysd.registry import (
    load_pipeline,  # noqa: F401 - "tiny-shapes" or a hub id
    real_pipeline,  # noqa: F401 - SD on a GPU, or the reason not
)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets"
#: Where training writes by default: the installed package is never written to.
USER_DIR = Path(os.environ.get("COURSE_HOME", "~/.cache/diffusion-course")).expanduser()
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


def legacy_key_map(config: UNetConfig) -> dict[str, str]:
    """Old module prefix -> new module prefix, for every module of a TinyUNet with ``config``.

    The old layout was two flat lists: ``down`` held, level by level, ``layers_per_level``
    entries ``{res, attn?}`` and then (except at the last level) one ``{downsample}``; ``up``
    held, from the lowest level up, ``layers_per_level + 1`` entries ``{res, attn?}`` and then
    (except at the top level) one ``{upsample}``; the middle was ``mid_res1``, ``mid_attn``,
    ``mid_res2``. The new layout has one block per level (see ``course.nets.unet``).
    """
    levels, n = len(config.channels), config.layers_per_level
    mapping = {"mid_res1": "mid.res1", "mid_attn": "mid.attn", "mid_res2": "mid.res2"}
    i = 0
    for level in range(levels):
        for j in range(n):
            mapping[f"down.{i}.res"] = f"down.{level}.resnets.{j}"
            mapping[f"down.{i}.attn"] = f"down.{level}.attentions.{j}"
            i += 1
        if level < levels - 1:
            mapping[f"down.{i}.downsample"] = f"down.{level}.downsample"
            i += 1
    i = 0
    for k, level in enumerate(reversed(range(levels))):
        for j in range(n + 1):
            mapping[f"up.{i}.res"] = f"up.{k}.resnets.{j}"
            mapping[f"up.{i}.attn"] = f"up.{k}.attentions.{j}"
            i += 1
        if level > 0:
            mapping[f"up.{i}.upsample"] = f"up.{k}.upsample.conv"
            i += 1
    return mapping


def rename_legacy_weights(weights: dict, config: UNetConfig) -> dict:
    """``weights`` with old-layout names renamed to the current ones (others kept as they are).

    Only the module prefix changes (``down.4.attn.to_qkv.weight`` ->
    ``down.2.attentions.0.to_qkv.weight``); the tensors are the same objects.
    """
    mapping = legacy_key_map(config)
    if not any(key.split(".")[0] in ("mid_res1", "mid_attn", "mid_res2") for key in weights):
        return dict(weights)  # already the current layout
    renamed = {}
    for key, value in weights.items():
        parts = key.split(".")
        # an old prefix has three parts (down.4.attn, up.2.upsample) or one (mid_res1)
        for cut in (3, 1):
            prefix = ".".join(parts[:cut])
            if prefix in mapping:
                key = ".".join([mapping[prefix], *parts[cut:]])
                break
        renamed[key] = value
    return renamed


def load_unet(name_or_path="ddpm-shapes", device=None) -> TinyUNet:
    """A bundled TinyUNet by name ("ddpm-shapes") or from a .safetensors path, in eval mode.

    Files in the old flat layout (the bundled one) are renamed on the fly by
    ``rename_legacy_weights``; loading is strict, so a name that maps nowhere is an error.
    """
    path = checkpoint_path(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        config = UNetConfig.from_dict(json.loads(handle.metadata()["config"]))
    model = TinyUNet(config)
    weights = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(rename_legacy_weights(weights, config))
    return model.to(device or "cpu").eval()
