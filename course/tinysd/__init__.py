"""Tiny Stable Diffusion of the captioned-shapes world: a genuine ``StableDiffusionPipeline``
(AutoencoderKL + CLIPTextModel + CLIPTokenizer + UNet2DConditionModel + DDIM), small enough to
train on a laptop CPU.

- ``vocab``: the CLIP tokenizer's vocabulary, built from the world's caption words;
- ``model``: the parts, their sizes and the noise schedule;
- ``evaluate``: prompt adherence per guidance scale (``python -m course.tinysd.evaluate``);
- saving, loading and naming pipelines is ``course.models``' job.

Training it is a recipe of ``course.training`` (``python -m course train tiny-sd``, or
``tiny-sd-flow`` for its denoiser trained with flow matching and sampled with
``FlowMatchEulerDiscreteScheduler``); its caption dropout, which lesson 05 shows, is also
reachable here as ``drop_captions``.

Names are imported from their modules on first use, so that ``import course.tinysd`` stays light
and ``python -m course.tinysd.evaluate`` does not import its own module twice.
"""

from __future__ import annotations

from importlib import import_module

_HOME = {
    "evaluate_adherence": ".evaluate",
    "format_table": ".evaluate",
    "vae_ceiling": ".evaluate",
    "TinySDConfig": ".model",
    "build_pipeline": ".model",
    "count_parameters": ".model",
    "make_scheduler": ".model",
    "random_pipeline": ".model",
    "drop_captions": "..training.captions",
    "load_tokenizer": ".vocab",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_HOME))
