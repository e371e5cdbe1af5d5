"""Follow one batch through a ``TinyUNet`` and write down the shape at every stage.

The U-Net's skip connections are easiest to believe when you watch them: every map the way down
makes is saved, and the way up uses them, last made first. ``trace_shapes`` registers a forward
hook on each stage (conv_in, the down blocks, the middle, the up blocks, conv_out), runs the
network once and returns one line per stage, e.g.::

    down[1]  -> [2, 64, 8, 8]      saves [2, 64, 16, 16], [2, 64, 8, 8]
    up[0]    -> [2, 64, 16, 16]    uses  [2, 64, 8, 8], [2, 64, 8, 8], [2, 64, 8, 8]
"""

from __future__ import annotations

import torch

from .unet import DownBlock, TinyUNet, UpBlock


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def _describe(name: str, module: torch.nn.Module, inputs: tuple, output) -> str:
    """One line: the stage, its output shape, and the skips it saves (down) or uses (up)."""
    if isinstance(module, DownBlock):
        h, skips = output  # a DownBlock returns its output and every map it made
        line = f"{name:<9}-> {_shape(h):<17} saves {', '.join(map(_shape, skips))}"
    elif isinstance(module, UpBlock):
        used = ", ".join(_shape(s) for s in reversed(inputs[1]))  # popped from the end
        line = f"{name:<9}-> {_shape(output):<17} uses  {used}"
    else:
        line = f"{name:<9}-> {_shape(output):<17} {'saves it' if name == 'conv_in' else ''}"
    return line.rstrip()


@torch.no_grad()
def trace_shapes(unet: TinyUNet, x_t: torch.Tensor,
                 t: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Run ``unet(x_t, t)`` once and describe each stage.

    x_t: [B, C, H, W]; t: [B] integer timesteps.
    Returns (lines, the predicted noise [B, C, H, W]); the hooks are removed afterwards.
    """
    stages = ([("conv_in", unet.conv_in)]
              + [(f"down[{i}]", block) for i, block in enumerate(unet.down)]
              + [("mid", unet.mid)]
              + [(f"up[{i}]", block) for i, block in enumerate(unet.up)]
              + [("conv_out", unet.conv_out)])
    lines = [f"{'x_t':<9}-> {_shape(x_t)}"]

    def hook_for(name):
        return lambda module, inputs, output: lines.append(_describe(name, module, inputs, output))

    hooks = [module.register_forward_hook(hook_for(name)) for name, module in stages]
    try:
        out = unet(x_t, t)
    finally:
        for hook in hooks:
            hook.remove()
    return lines, out
