"""Tiny Stable Diffusion of the captioned-shapes world: a genuine ``StableDiffusionPipeline``
(AutoencoderKL + CLIPTextModel + CLIPTokenizer + UNet2DConditionModel + DDIM), small enough to
train on a laptop CPU.

- ``vocab``: the CLIP tokenizer's vocabulary, built from the world's caption words;
- ``model``: the parts, their sizes and the noise schedule;
- ``train``: both training stages (``python -m course.tinysd.train``);
- ``evaluate``: prompt adherence per guidance scale (``python -m course.tinysd.evaluate``);
- saving, loading and naming pipelines is ``course.models``' job.

Names are imported from their modules on first use, so that ``import course.tinysd`` stays light
and ``python -m course.tinysd.train`` does not import its own module twice.
"""

from __future__ import annotations

from importlib import import_module

_HOME = {
    "evaluate_adherence": "evaluate",
    "format_table": "evaluate",
    "vae_ceiling": "evaluate",
    "TinySDConfig": "model",
    "build_pipeline": "model",
    "count_parameters": "model",
    "make_scheduler": "model",
    "random_pipeline": "model",
    "TinySDRecipe": "train",
    "drop_captions": "train",
    "train_tiny_sd": "train",
    "load_tokenizer": "vocab",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_HOME))
