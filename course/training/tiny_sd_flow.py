"""The tiny text-to-image pipeline trained with flow matching: ``python -m course train
tiny-sd-flow``.

Everything but the loss is tiny-sd's stage 2 (``tiny_sd.py``): the same U-Net and text encoder, the
same images, steps, batch, learning-rate schedule, EMA and caption dropout, on the latents of
tiny-shapes' own autoencoder (``--vae-from tiny-shapes``, stage 1 skipped), so that the two models
differ in their denoising objective alone. The objective (``objectives.FlowMatching``):

    z_sigma = (1 - sigma) z0 + sigma eps,   sigma = sigmoid(u), u ~ N(0, 1)  (SD3's logit-normal)
    L       = || (eps - z0) - v_theta(z_sigma, 1000 sigma, E(caption)) ||^2

and the pipeline it writes samples with ``FlowMatchEulerDiscreteScheduler``.

What the bundled run (tiny-shapes-flow, this recipe as it stands) measured: colour and shape right
for 100% of 96 seen and 96 held-out prompts at guidance 1 and 3, position at chance (13-17%; 1/5).
Where a shape goes is decided in the first, noisiest steps, and SD3's logit-normal density puts
1.4% of its draws at sigma > 0.9, against 17% for tiny-shapes' uniform t at the same
signal-to-noise ratio (10% for ``--time-sampling uniform``): the network never learnt to read
the position words where they matter, and a caption with its position swapped moves its loss by
1% at most, at any sigma.
"""

from __future__ import annotations

from dataclasses import replace

from ..models.registry import USER_DIR
from . import tiny_sd
from .objectives import TIME_SAMPLINGS

#: tiny-sd's recipe with the flow objective, on tiny-shapes' autoencoder
FLOW_RECIPE = replace(tiny_sd.TinySDRecipe(), objective="flow", time_sampling="logit-normal",
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
