"""What diffusing in latent space saves, measured on real networks.

A sampler calls its denoiser once per step (twice with classifier-free guidance), so the cost of
one call, in time and in memory, is the price of every step. This module measures that price for
any callable, with numbers that each mean one precise thing:

- ``ms``: median wall-clock milliseconds of one call (after warm-up calls; CUDA synchronised);
- ``saved_mb``: the activations one call keeps for a backward pass, i.e. the memory that
  *training* needs on top of the weights. Counted exactly, by hooking every tensor autograd saves
  (each storage once, the network's own parameters excluded);
- ``written_mb``: the bytes of every tensor the call's operations produce (the traffic of
  *inference*, without gradients). Counted by intercepting each operation's outputs; a view of an
  existing tensor adds nothing. It is an upper bound on inference's peak, since most intermediates
  are freed as soon as the next operation has read them;
- on CUDA, ``peak_mb``: the allocator's own peak during one call, above what was allocated before.

None of them includes the weights (``params`` counts those) or the framework's own overhead.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

MB = 1024**2

#: Stable Diffusion 1.x: a 512 x 512 RGB image and its 64 x 64 x 4 latent (the VAE's f = 8).
SD15_PIXELS = (3, 512, 512)
SD15_LATENTS = (4, 64, 64)


def value_count(shape) -> int:
    """Numbers in one item of ``shape`` (C, H, W): 3 x 512 x 512 = 786,432."""
    return math.prod(shape)


def compression(pixel_shape, latent_shape) -> float:
    """How many times fewer numbers the latent has: (3, 512, 512) vs (4, 64, 64) -> 48."""
    return value_count(pixel_shape) / value_count(latent_shape)


def attention_entries(shape) -> int:
    """Entries of one self-attention map over every position of a (C, H, W) map: (H W)^2."""
    return (shape[-1] * shape[-2]) ** 2


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
              device: torch.device | str = "cpu") -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls (not timed)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def saved_activation_bytes(fn: Callable[[], object], module: torch.nn.Module | None = None) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn()`` runs (gradients on).

    Each storage counts once (several saved views of one tensor share it); parameters of
    ``module`` (and any tensor that is a leaf requiring grad) are excluded: they exist anyway.
    """
    params = set()
    if module is not None:
        params = {_storage_key(p) for p in module.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor):
        if tensor.requires_grad and tensor.is_leaf:
            return tensor
        key = _storage_key(tensor)
        if key not in params:
            seen[key] = key[1]
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


class _CountOutputs(TorchDispatchMode):
    """Adds up the bytes of every new storage an operation returns."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {a.untyped_storage().data_ptr()
                  for a in pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        out = func(*args, **kwargs)
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and \
                    tensor.untyped_storage().data_ptr() not in inputs:
                self.bytes += tensor.untyped_storage().nbytes()
        return out


def written_bytes(fn: Callable[[], object]) -> int:
    """Bytes of every tensor the operations inside ``fn()`` produce, without gradients.

    Outputs that share storage with an input (views, in-place results) add nothing.
    """
    counter = _CountOutputs()
    with torch.no_grad(), counter:
        fn()
    return counter.bytes


def cuda_peak_bytes(fn: Callable[[], object], device) -> int | None:
    """The CUDA allocator's peak during ``fn()`` above what was allocated before; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def step_cost(label: str, module: torch.nn.Module, call: Callable[[], object],
              input_shape, repeats: int = 10, device="cpu", params: int | None = None) -> dict:
    """One row of the cost table: ``call()`` runs ``module`` once on an input of ``input_shape``.

    Returns {"label", "input", "values", "params", "ms", "saved_mb", "written_mb", "peak_mb"}:
    ``values`` per item of the batch (C x H x W), the memories for the whole call. ``params``
    (default: all of ``module``'s) is what the row reports; ``module``'s parameters are never
    counted as activations.
    """
    with torch.no_grad():
        seconds = time_call(call, repeats=repeats, device=device)
    peak = cuda_peak_bytes(call, device)
    return {
        "label": label,
        "input": "x".join(str(s) for s in input_shape),
        "values": value_count(input_shape[1:]),
        "params": params if params is not None else sum(p.numel() for p in module.parameters()),
        "ms": 1000 * seconds,
        "saved_mb": saved_activation_bytes(call, module) / MB,
        "written_mb": written_bytes(call) / MB,
        "peak_mb": None if peak is None else peak / MB,
    }


def pixel_twin(unet):
    """An untrained copy of a ``UNet2DConditionModel``'s architecture that takes 3-channel pixels
    at ``vae_factor`` x its latent size: the same network, asked to work in pixel space.

    Its weights are random (costs do not depend on them), drawn from a generator of its own.
    """
    from diffusers import UNet2DConditionModel

    config = dict(unet.config)
    config.update(in_channels=3, out_channels=3, sample_size=2 * config["sample_size"])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)  # the CPU's only: the one forked
        twin = UNet2DConditionModel.from_config(config)
    # Cast by hand, parameter by parameter: ModelMixin.to(dtype) warns about nothing here.
    for p in twin.parameters():
        p.data = p.data.to(unet.device, unet.dtype)
    return twin.eval()


def measure_step_costs(pipe, pixel_unet: torch.nn.Module, batch: int = 8, repeats: int = 10,
                       prompt: str = "a red circle on the left") -> list[dict]:
    """Cost of one denoising call on ``batch`` inputs, pixel space vs latent space.

    Rows: lesson 02's pixel U-Net on [batch, 3, 32, 32]; the tiny SD U-Net on its
    [batch, 4, 16, 16] latents (with the prompt's text embedding); the same SD architecture,
    untrained, on [batch, 3, 32, 32] pixels (like for like: only the input size changes); and the
    VAE decoder, which runs once per image, not once per step.
    """
    device, dtype = pipe.unet.device, pipe.unet.dtype
    size = pipe.unet.config.sample_size
    factor = pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, size * factor, size * factor, generator=gen).to(device, dtype)
    latents = torch.randn(batch, pipe.unet.config.in_channels, size, size,
                          generator=gen).to(device, dtype)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    with torch.no_grad():
        ids = pipe.tokenizer([prompt] * batch, padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(device)
        text = pipe.text_encoder(ids)[0]
    twin = pixel_twin(pipe.unet)
    pixel_unet = pixel_unet.to(device, dtype).eval()
    decoder_input = latents / pipe.vae.config.scaling_factor
    rows = [
        step_cost("lesson 02 U-Net, pixels", pixel_unet, lambda: pixel_unet(pixels, t),
                  pixels.shape, repeats, device),
        step_cost("SD U-Net, latents", pipe.unet,
                  lambda: pipe.unet(latents, t, encoder_hidden_states=text).sample,
                  latents.shape, repeats, device),
        step_cost("SD U-Net, pixels (untrained twin)", twin,
                  lambda: twin(pixels, t, encoder_hidden_states=text).sample,
                  pixels.shape, repeats, device),
        step_cost("VAE decoder (once per image)", pipe.vae,
                  lambda: pipe.vae.decode(decoder_input).sample, latents.shape, repeats, device,
                  params=sum(p.numel() for m in (pipe.vae.post_quant_conv, pipe.vae.decoder)
                             for p in m.parameters())),
    ]
    return rows


def format_costs(rows: list[dict]) -> str:
    """The rows of :func:`measure_step_costs` as a plain-text table."""
    peak = any(r["peak_mb"] is not None for r in rows)
    head = (f"{'network, input':<36}{'shape':>13}{'values':>8}{'params':>10}{'ms/call':>9}"
            f"{'saved MB':>10}{'written MB':>12}" + (f"{'peak MB':>9}" if peak else ""))
    lines = [head]
    for r in rows:
        line = (f"{r['label']:<36}{r['input']:>13}{r['values']:>8,}{r['params']:>10,}"
                f"{r['ms']:>9.2f}{r['saved_mb']:>10.2f}{r['written_mb']:>12.2f}")
        if peak:
            line += f"{r['peak_mb']:>9.2f}" if r["peak_mb"] is not None else f"{'-':>9}"
        lines.append(line)
    return "\n".join(lines)
