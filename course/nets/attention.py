"""Cross-attention, the layer through which text steers a text-to-image U-Net.

Every spatial position of the image features asks a question (a *query*); every text token
offers an answer (a *value*) under a label (a *key*). A position takes a weighted average of the
values, weighted by how well its query matches each key:

    Q = x W_q            [B, N, inner]   N = h * w image positions   (queries from the image)
    K = c W_k, V = c W_v [B, L, inner]   L text tokens               (keys, values from the text)
    A = softmax(Q K^T / sqrt(d))         [B, heads, N, L]  each row sums to 1 over the tokens
    out = (A V) W_out                    [B, N, query_dim]

with d the width of one head. Several heads do this side by side on slices of width d of the
projections, each free to match on something else (colour, shape, place), and ``to_out`` mixes
them again. Self-attention is the same layer with ``context = x``.

The names (``to_q``, ``to_k``, ``to_v``, ``to_out``) and the default biases (none on the
projections, one on the output) are those of diffusers' ``Attention``, so
``CrossAttention.from_diffusers(layer)`` copies the weights of any cross-attention layer of a
``UNet2DConditionModel`` and computes the same thing (``attn2`` in its transformer blocks).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossAttention(nn.Module):
    """Multi-head cross-attention: image features attend to text tokens.

    Args:
        query_dim: channels of the image features x.
        context_dim: width of the text states (the text encoder's hidden size); None: query_dim,
            which makes it self-attention when called with ``context=None``.
        heads: number of heads.
        dim_head: width of one head; inner width = heads * dim_head (default query_dim // heads).
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 4,
                 dim_head: int | None = None):
        super().__init__()
        context_dim = query_dim if context_dim is None else context_dim
        dim_head = query_dim // heads if dim_head is None else dim_head
        if dim_head < 1:
            raise ValueError(f"query_dim={query_dim} gives no channels to each of {heads} heads")
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)    # image -> queries
        self.to_k = nn.Linear(context_dim, inner, bias=False)  # text -> keys
        self.to_v = nn.Linear(context_dim, inner, bias=False)  # text -> values
        self.to_out = nn.Linear(inner, query_dim)              # mixes the heads back

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, S, heads * d] -> [B, heads, S, d]: each head sees its own slice of channels."""
        batch, length, _ = t.shape
        return t.view(batch, length, self.heads, self.dim_head).transpose(1, 2)

    def attention_probs(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """A = softmax(Q K^T / sqrt(d)) over the text tokens: [B, heads, N, L]."""
        q = self.split_heads(self.to_q(x))        # [B, heads, N, d]
        k = self.split_heads(self.to_k(context))  # [B, heads, L, d]
        # Q K^T / sqrt(d): without the scale, dot products grow with d and the softmax saturates
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim_head)  # [B, heads, N, L]
        return scores.softmax(dim=-1)  # over the tokens: each position's weights sum to 1

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                return_probs: bool = False):
        """x: [B, N, query_dim] image features (positions flattened); context: [B, L, context_dim]
        text states (None: x itself, self-attention). Returns [B, N, query_dim], and the
        attention probabilities [B, heads, N, L] too when ``return_probs``."""
        context = x if context is None else context
        probs = self.attention_probs(x, context)           # [B, heads, N, L]
        v = self.split_heads(self.to_v(context))           # [B, heads, L, d]
        out = probs @ v                                    # A V: [B, heads, N, d]
        out = out.transpose(1, 2).flatten(2)               # heads side by side: [B, N, heads * d]
        out = self.to_out(out)                             # (A V) W_out: [B, N, query_dim]
        return (out, probs) if return_probs else out

    @classmethod
    def from_diffusers(cls, layer) -> CrossAttention:
        """A copy of a diffusers ``Attention`` layer (e.g. a U-Net's ``attn2``), same weights."""
        inner, query_dim = layer.to_q.out_features, layer.to_q.in_features
        module = cls(query_dim, layer.to_k.in_features, heads=layer.heads,
                     dim_head=inner // layer.heads)
        if layer.to_out[0].bias is None or layer.to_q.bias is not None:
            raise ValueError("only layers with an output bias and bias-free q/k/v are supported")
        module.load_state_dict({
            "to_q.weight": layer.to_q.weight, "to_k.weight": layer.to_k.weight,
            "to_v.weight": layer.to_v.weight, "to_out.weight": layer.to_out[0].weight,
            "to_out.bias": layer.to_out[0].bias})
        return module.to(layer.to_q.weight.device, layer.to_q.weight.dtype)
