"""The tiny text-to-image pipeline trained with flow matching: ``python -m course train
tiny-sd-flow``.

Everything but the loss is tiny-sd's stage 2 (``tiny_sd.py``): the same U-Net and text encoder, the
same images, steps, batch, learning-rate schedule, EMA and caption dropout, on the latents of
tiny-shapes' own autoencoder (``--vae-from tiny-shapes``, stage 1 skipped), so that the two models
differ in their denoising objective alone. The objective (``objectives.FlowMatching``):

    z_sigma = (1 - sigma) z0 + sigma eps,   sigma ~ U(0, 1)   (SD3: sigmoid(N(0, 1)), logit-normal)
    L       = || (eps - z0) - v_theta(z_sigma, 1000 sigma, E(caption)) ||^2

and the pipeline it writes samples with ``FlowMatchEulerDiscreteScheduler``.

Why uniform sigmas by default: the two bundled runs (``python -m course.tinysd.evaluate DIR
--scales 1 3``, 25 Euler steps, 96 seen and 96 held-out prompts) measured

- tiny-shapes-flow (uniform): 100% of prompts right at guidance 1 and 3, seen and held out;
- tiny-shapes-flow-logit-normal (``--time-sampling logit-normal``): colour and shape 100%,
  position at chance (13-17%; 1/5).

Where a shape goes is decided in the first, noisiest steps, and SD3's logit-normal density puts
1.4% of its draws at sigma > 0.9 (uniform: 10%; tiny-shapes' uniform t puts 17% of its draws at
the same signal-to-noise ratio): the network never learnt to read the position words where they
matter. SD3 picked that density by comparing samplers on its own, far larger images and model
(Esser et al. 2024, arXiv 2403.03206): a choice measured at one scale, not a law.
"""

from __future__ import annotations

from dataclasses import replace

from ..models.registry import USER_DIR
from . import tiny_sd
from .objectives import TIME_SAMPLINGS

#: tiny-sd's recipe with the flow objective, on tiny-shapes' autoencoder
FLOW_RECIPE = replace(tiny_sd.TinySDRecipe(), objective="flow", time_sampling="uniform",
                      vae_from="tiny-shapes")
DEFAULT_OUTPUT = USER_DIR / "tiny-shapes-flow"


def add_arguments(parser) -> None:
    """tiny-sd's options (``--vae-from`` defaulting to tiny-shapes) and the flow's own."""
    tiny_sd.add_arguments(parser, output=DEFAULT_OUTPUT)
    parser.description = __doc__.split("\n\n")[0].replace("\n", " ")
    parser.set_defaults(vae_from=FLOW_RECIPE.vae_from)
    parser.add_argument("--time-sampling", choices=TIME_SAMPLINGS,
                        help=f"how training draws sigma (default: {FLOW_RECIPE.time_sampling})")
    parser.add_argument("--shift", type=float, help="SD3's time shift of the training sigmas and "
                        f"of the sampler (default: {FLOW_RECIPE.flow_shift}, none)")


def run(args) -> int:
    """Train with the options of ``add_arguments``; write the pipeline and its record."""
    return tiny_sd.run(args, FLOW_RECIPE, time_sampling=args.time_sampling,
                       flow_shift=args.shift)
