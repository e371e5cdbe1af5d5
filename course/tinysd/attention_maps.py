"""Where each word looks: the cross-attention probabilities of a U-Net, recorded while it samples.

Every cross-attention layer (``attn2`` in the transformer blocks of a ``UNet2DConditionModel``)
computes A = softmax(Q K^T / sqrt(d)) of shape [batch * heads, h * w, L]: for each latent position,
a distribution over the L prompt tokens. ``record_attention`` swaps in an attention processor that
computes exactly what diffusers' ``AttnProcessor`` does and keeps A on the side, runs the
pipeline once, and returns one map per sampling step and token: the layers' maps (8x8 and 4x4 in
the tiny pipeline) averaged over heads; ``AttentionRecord.maps`` upsamples them to the image's
size, one layer or the mean of all.
The pipeline's processors are put back afterwards.

With classifier-free guidance the U-Net sees [unconditional, conditional] in one batch; only the
conditional half is kept (the unconditional half attends to the empty prompt).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class AttentionRecord:
    """The result of one sampling run with recorded cross-attention.

    prompts: n prompts; images: [n, 3, H, W] in [-1, 1]; tokens: per prompt, the L token strings;
    n_prompt_tokens: per prompt, how many tokens are the prompt's own (start, words, first
    end-of-text), the rest being padding; timesteps: the S timesteps sampled, in order;
    layer_maps: layer name -> [S, n, L, side, side], each layer's maps at its own resolution
    (averaged over heads). At each position the L values are a distribution (they sum to 1).
    """

    prompts: list[str]
    images: torch.Tensor
    tokens: list[list[str]]
    n_prompt_tokens: list[int]
    timesteps: list[int]
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_maps)

    def last_layer(self, side: int) -> str:
        """The name of the last layer with ``side`` x ``side`` maps that a U-Net call runs (down
        blocks, then the middle, then the up blocks): of that resolution, the one nearest the
        output."""
        names = [n for n in self.layers if self.layer_maps[n].shape[-1] == side]
        if not names:
            sides = sorted({m.shape[-1] for m in self.layer_maps.values()})
            raise ValueError(f"no layer with {side}x{side} maps; the sides here are {sides}")
        return max(names, key=_run_order)

    def maps(self, layer: str | None = None, size: int | None = None,
             prompt_index: int | None = None) -> torch.Tensor:
        """[S, n, L, H, W] at the image's size (or ``size`` x ``size``, to save memory on large
        images): one layer's maps, or (None) the mean of all layers. With ``prompt_index``, only
        that prompt's maps are upsampled: [S, 1, L, H, W]."""
        names = self.layers if layer is None else [layer]
        size = self.images.shape[-2:] if size is None else (size, size)
        chosen = slice(None) if prompt_index is None else slice(prompt_index, prompt_index + 1)
        upsampled = [F.interpolate(self.layer_maps[name][:, chosen].flatten(0, 1), size=size,
                                   mode="bilinear", align_corners=False)
                     for name in names]  # bilinear: a coarse grid seen at pixel resolution
        return torch.stack(upsampled).mean(0).unflatten(0, (len(self.timesteps), -1))

    def token_maps(self, prompt_index: int = 0, layer: str | None = None,
                   size: int | None = None) -> tuple[list[str], torch.Tensor]:
        """(labels, maps [S, K, H, W]) of one prompt: its own tokens, then the padding summed."""
        k = self.n_prompt_tokens[prompt_index]
        maps = self.maps(layer, size, prompt_index)[:, 0]
        labels = [_label(t) for t in self.tokens[prompt_index][:k]]
        own = maps[:, :k]
        if maps.shape[1] > k:
            labels.append(f"padding (x{maps.shape[1] - k})")
            own = torch.cat([own, maps[:, k:].sum(1, keepdim=True)], 1)
        return labels, own


def _run_order(name: str) -> tuple:
    """Sort key of a layer name in the order a UNet2DConditionModel runs it: named_modules lists
    up_blocks before mid_block (the order of registration), the forward pass does not."""
    stage = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[name.split(".")[0]]
    return (stage, *(int(part) for part in name.split(".") if part.isdigit()))


def _label(token: str) -> str:
    """'red</w>' -> 'red'; special tokens stay as they are."""
    return token.removesuffix("</w>")


#: slips ``RecordingAttnProcessor`` can make on purpose, to measure what each one costs
SLIPS = ("no_scale", "softmax_over_positions", "keys_from_image")


class RecordingAttnProcessor:
    """diffusers' ``AttnProcessor`` arithmetic for cross-attention, keeping the probabilities.

    ``sink(name, probs)``, when given, receives A averaged over heads: [batch, h * w, L].
    ``slip`` (one of ``SLIPS``, for the lesson's measurements) makes one known mistake:
    no 1/sqrt(d), a softmax over the image positions, or keys and values taken from the image.
    """

    def __init__(self, name: str = "", sink=None, slip: str | None = None):
        if slip is not None and slip not in SLIPS:
            raise ValueError(f"slip must be None or one of {SLIPS}, got {slip!r}")
        self.name, self.sink, self.slip = name, sink, slip

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        if encoder_hidden_states is None or hidden_states.ndim != 3:
            raise ValueError("RecordingAttnProcessor handles cross-attention on [B, N, C] only")
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross:
            raise ValueError("RecordingAttnProcessor does not handle normalised attention layers")
        batch, positions, _ = hidden_states.shape
        source = hidden_states if self.slip == "keys_from_image" else encoder_hidden_states
        mask = attn.prepare_attention_mask(attention_mask, source.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # [B*heads, N, d]
        key = attn.head_to_batch_dim(attn.to_k(source))            # [B*heads, L, d]
        value = attn.head_to_batch_dim(attn.to_v(source))          # [B*heads, L, d]
        scale = 1.0 if self.slip == "no_scale" else attn.scale     # attn.scale = 1 / sqrt(d)
        scores = scale * query @ key.transpose(-1, -2)             # Q K^T / sqrt(d): [B*h, N, L]
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-2 if self.slip == "softmax_over_positions" else -1)
        if self.sink is not None:
            self.sink(self.name, probs.detach().view(batch, attn.heads, positions, -1).mean(1))
        out = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))  # A V, heads joined
        out = attn.to_out[1](attn.to_out[0](out))  # output projection, dropout
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def cross_attention_slip(unet, slip: str | None):
    """Within the block, every cross-attention layer of ``unet`` makes ``slip`` (None: none)."""
    saved = dict(unet.attn_processors)
    layers = cross_attention_layers(unet)
    unet.set_attn_processor({name: (RecordingAttnProcessor(slip=slip)
                                    if name.removesuffix(".processor") in layers else proc)
                             for name, proc in saved.items()})
    try:
        yield unet
    finally:
        unet.set_attn_processor(saved)


def cross_attention_layers(unet) -> dict[str, torch.nn.Module]:
    """name -> layer, for every cross-attention layer (``attn2``) of a UNet2DConditionModel."""
    return {name: module for name, module in unet.named_modules()
            if name.endswith("attn2") and getattr(module, "is_cross_attention", True)}


@torch.no_grad()
def record_attention(pipe, prompts, steps: int = 20, seed: int = 0,
                     guidance_scale: float = 1.0) -> AttentionRecord:
    """Sample ``prompts`` (a str or a list) once with ``pipe`` and record the cross-attention.

    Image i starts from the noise of ``torch.Generator().manual_seed(seed + i)``.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    n = len(prompts)
    unet = pipe.unet
    layers = cross_attention_layers(unet)
    if not layers:
        raise ValueError("this U-Net has no cross-attention layers (attn2)")
    calls: list[dict] = []  # one per U-Net call: {"t": int, name: probs [n, N, L]}

    def start_call(module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        calls.append({"t": int(torch.as_tensor(t).flatten()[0])})

    def sink(name, probs):
        calls[-1][name] = probs[-n:].float().cpu()  # the conditional half under guidance

    saved = dict(unet.attn_processors)
    hook = unet.register_forward_pre_hook(start_call, with_kwargs=True)
    try:
        unet.set_attn_processor({name: (RecordingAttnProcessor(name.removesuffix(".processor"),
                                                               sink)
                                        if name.removesuffix(".processor") in layers else proc)
                                 for name, proc in saved.items()})
        generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generators, output_type="pt").images.float().cpu() * 2 - 1
    finally:
        hook.remove()
        unet.set_attn_processor(saved)

    layer_maps = {}
    for name in layers:
        probs = torch.stack([call[name] for call in calls])  # [S, n, N, L]
        side = int(round(probs.shape[2] ** 0.5))  # square latents: N = side * side
        layer_maps[name] = probs.transpose(2, 3).unflatten(3, (side, side))  # [S, n, L, s, s]
    tokenizer = pipe.tokenizer
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True).input_ids
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in ids]
    own = [row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
           for row in ids]
    return AttentionRecord(prompts, images, tokens, own, [c["t"] for c in calls], layer_maps)


def shape_mask(images: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Pixels that are not background: bool [n, H, W] from images [n, 3, H, W] in [-1, 1]."""
    from ..data.shapes import BACKGROUND

    background = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    return (images.float() - background).abs().amax(1) > threshold


def mass_inside(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each map's total inside ``mask``: maps [..., H, W], mask [H, W] -> [...]."""
    total = maps.sum((-2, -1)).clamp_min(1e-12)
    return (maps * mask.to(maps.dtype)).sum((-2, -1)) / total


def concentration(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much denser a map is inside ``mask`` than spread evenly: (share inside) / (share of
    the area). 1: no preference; 2: twice the even share. maps [..., H, W], mask [H, W]."""
    return mass_inside(maps, mask) / mask.float().mean().clamp_min(1e-12)


#: what each token of a world caption ("a red circle on the left") is, for ``concentration_by_role``
TOKEN_ROLES = ("start", "a", "colour", "shape", "where (words)", "end", "padding")


def token_role(position: int, label: str) -> str:
    """The role of the token at ``position`` of a caption's token labels (``token_maps``)."""
    if label.startswith("padding"):
        return "padding"
    if position == 0:
        return "start"
    if label == "<|endoftext|>":
        return "end"
    return {1: "a", 2: "colour", 3: "shape"}.get(position, "where (words)")


def concentration_by_role(record: AttentionRecord, masks: torch.Tensor, layer: str | None = None,
                          steps: slice = slice(None)) -> dict[str, float]:
    """Mean ``concentration`` of each token role's map on the shape, over the record's prompts.

    masks: [n, H, W] bool, the shape of each generated image (``shape_mask``); layer: one layer's
    maps, or None for the mean of all; steps: which sampling steps to average the maps over.
    Returns {role: mean concentration} for every role in ``TOKEN_ROLES``.
    """
    found: dict[str, list[float]] = {role: [] for role in TOKEN_ROLES}
    for i in range(len(record.prompts)):
        labels, maps = record.token_maps(i, layer)
        values = concentration(maps[steps].mean(0), masks[i])
        for position, (label, value) in enumerate(zip(labels, values.tolist())):
            found[token_role(position, label)].append(value)
    return {role: sum(v) / len(v) if v else float("nan") for role, v in found.items()}
