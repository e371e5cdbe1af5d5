"""Training recipes, on 🤗 accelerate: the same loop runs on a CPU, a GPU or several GPUs
(``accelerate launch -m course train RECIPE ...``).

- ``ddpm``: lesson 02's teaching U-Net on the captioned-shapes world;
- ``tiny_sd``: the tiny text-to-image pipeline, autoencoder then U-Net and text encoder;
  ``tiny_sd_flow``: the same denoiser trained with flow matching; ``objectives``: their losses;
  ``reflow``: one round of reflow on the flow pipeline (its own noise-sample pairs);
- ``lora``: LoRA adapters (and full fine-tuning) of that pipeline; ``adapters``: their data and
  files;
- shared: ``recipe`` (a recipe dataclass to and from JSON), ``seeding`` (a recipe's seed without
  touching the caller's random state), ``ema``, ``clock`` (the time limit), ``record`` (what a
  run writes beside its checkpoint), ``captions`` (text conditioning during training).

``RECIPES`` is what ``python -m course train NAME`` offers. Each recipe's module has
``add_arguments(parser)`` and ``run(args)``; it is imported only when its recipe is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Command:
    """A recipe on the command line: its module in this package and a one-line summary."""

    module: str
    summary: str

    def add_arguments(self, parser) -> None:
        import_module(f"{__name__}.{self.module}").add_arguments(parser)

    def run(self, args) -> int:
        return import_module(f"{__name__}.{self.module}").run(args)


RECIPES = {
    "ddpm-shapes": Command("ddpm", "lesson 02's denoiser (TinyUNet, DDPM) on the shapes world"),
    "tiny-sd": Command("tiny_sd", "the tiny text-to-image pipeline (autoencoder, U-Net, text "
                       "encoder)"),
    "tiny-sd-flow": Command("tiny_sd_flow", "the tiny pipeline's denoiser trained with flow "
                            "matching, on tiny-shapes' autoencoder"),
    "reflow": Command("reflow", "one round of reflow: the flow pipeline retrained on its own "
                      "(noise, sample) pairs"),
    "lora": Command("lora", "a LoRA adapter (or a full fine-tune) of the tiny pipeline"),
}
