"""Checks for lesson 04, CLIP and cross-attention.

Oracles: for ``clip_loss``, the symmetric cross-entropy written here with plain torch
(``torch.nn.functional.cross_entropy`` on cosine logits times exp(logit_scale)) and, on the same
logits, transformers' own ``image_text_contrastive_loss`` (what ``CLIPModel(return_loss=True)``
computes); for ``cross_attention``, diffusers' ``Attention`` layer (the class of every attention
layer in a ``UNet2DConditionModel``) with the very weights the learner's function receives.

The known mistakes are the slips the lesson measures, written out here with plain torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor

__all__ = ["EXERCISES", "clip_loss", "cross_attention", "hint"]


# --------------------------------------------------------------------------------------------
# Exercise 1: clip_loss(image_embeds, text_embeds, logit_scale) -> scalar
# --------------------------------------------------------------------------------------------


def _reference_clip_loss(image_embeds, text_embeds, logit_scale):
    """Symmetric InfoNCE in float64, with plain torch."""
    u = image_embeds.double() / image_embeds.double().norm(dim=-1, keepdim=True)
    w = text_embeds.double() / text_embeds.double().norm(dim=-1, keepdim=True)
    logits = logit_scale.double().exp() * u @ w.T  # [B images, B texts]
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _clip_case(name, seed, batch, dim, scale, spread=1.0, match=0.8, hidden=False):
    """Pairs whose text embedding leans towards its image's (``match``), as after some training;
    ``spread`` scales the raw vectors, which normalisation must undo."""

    def make():
        gen = seeded(seed)
        image = torch.randn(batch, dim, generator=gen)
        text = match * image + (1 - match) * torch.randn(batch, dim, generator=gen)
        lengths = spread * (0.5 + torch.rand(batch, 1, generator=gen))  # unequal lengths
        return {"image_embeds": image * spread * (0.5 + torch.rand(batch, 1, generator=gen)),
                "text_embeds": text * lengths,
                "logit_scale": torch.tensor(float(scale))}

    def verify(inputs, got):
        from transformers.models.clip.modeling_clip import image_text_contrastive_loss

        expected = _reference_clip_loss(inputs["image_embeds"], inputs["text_embeds"],
                                         inputs["logit_scale"])
        # the same number from transformers (it takes the captions-by-images logits)
        u = F.normalize(inputs["image_embeds"].double(), dim=-1)
        w = F.normalize(inputs["text_embeds"].double(), dim=-1)
        library = image_text_contrastive_loss(inputs["logit_scale"].double().exp() * w @ u.T)
        assert torch.allclose(expected, library), "the two oracles disagree"
        return compare_tensor("loss", got, expected.float(), atol=1e-5, rtol=1e-4)

    return Case(name, make, verify, hidden=hidden)


def _parts(image_embeds, text_embeds, logit_scale, normalize_dim=-1, scale="exp"):
    u, w = image_embeds.double(), text_embeds.double()
    if normalize_dim is not None:
        u = u / u.norm(dim=normalize_dim, keepdim=True)
        w = w / w.norm(dim=normalize_dim, keepdim=True)
    s = logit_scale.double()
    factor = {"exp": s.exp(), "none": torch.tensor(1.0, dtype=torch.float64), "raw": s,
              "divide": 1 / s.exp()}[scale]
    return factor * u @ w.T, torch.arange(len(u))


def _symmetric(**how):
    def loss(image_embeds, text_embeds, logit_scale):
        logits, labels = _parts(image_embeds, text_embeds, logit_scale, **how)
        return ((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2).float()
    return loss


def _images_to_texts_only(image_embeds, text_embeds, logit_scale):
    logits, labels = _parts(image_embeds, text_embeds, logit_scale)
    return F.cross_entropy(logits, labels).float()


def _texts_to_images_only(image_embeds, text_embeds, logit_scale):
    logits, labels = _parts(image_embeds, text_embeds, logit_scale)
    return F.cross_entropy(logits.T, labels).float()


def _summed(image_embeds, text_embeds, logit_scale):
    logits, labels = _parts(image_embeds, text_embeds, logit_scale)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)).float()


clip_loss = Exercise(
    name="clip_loss",
    function="clip_loss",
    points=2,
    oracles=("transformers.models.clip", "transformers.CLIPModel", "open_clip"),
    cases=[
        _clip_case("a batch of 4 pairs, CLIP's starting scale log(1/0.07)", 0, 4, 8,
                   math.log(1 / 0.07)),
        _clip_case("a batch of 16, 32-dim embeddings of length about 5", 1, 16, 32,
                   math.log(1 / 0.07), spread=5.0),
        _clip_case("a batch of 32 at the scale cap log(100)", 2, 32, 16, math.log(100),
                   hidden=True),
        _clip_case("a batch of 7, logit_scale = 1.5, long vectors", 3, 7, 5, 1.5, spread=20.0,
                   hidden=True),
        _clip_case("a batch of 64, almost unrelated pairs", 4, 64, 64, 2.0, match=0.1,
                   hidden=True),
    ],
    mistakes=[
        Mistake("only images -> captions", _images_to_texts_only,
                "only the rows were scored (each image picks its caption); CLIP's loss also "
                "scores the columns (each caption picks its image) and averages the two."),
        Mistake("only captions -> images", _texts_to_images_only,
                "only the columns were scored (each caption picks its image); CLIP's loss also "
                "scores the rows (each image picks its caption) and averages the two."),
        Mistake("no normalisation", _symmetric(normalize_dim=None),
                "the raw embeddings were multiplied; divide each by its length first, so the "
                "logits are cosines times the scale and a long vector cannot win by length."),
        Mistake("normalised over the batch", _symmetric(normalize_dim=0),
                "each embedding *dimension* was normalised over the batch (dim=0); normalise "
                "each embedding (each row) to length 1 (dim=-1)."),
        Mistake("temperature forgotten", _symmetric(scale="none"),
                "the logits were the cosines themselves, in [-1, 1]: a softmax over them can "
                "hardly prefer anything. Multiply by exp(logit_scale)."),
        Mistake("logit_scale used without exp", _symmetric(scale="raw"),
                "logit_scale is the *logarithm* of the inverse temperature (so that it stays "
                "positive while trained freely); the logits take exp(logit_scale)."),
        Mistake("divided by exp(logit_scale)", _symmetric(scale="divide"),
                "the cosines were divided by exp(logit_scale); exp(logit_scale) is 1 / "
                "temperature already, so the logits are multiplied by it."),
        Mistake("two directions summed, not averaged", _summed,
                "the two cross-entropies were added; CLIP takes their mean, (a + b) / 2."),
    ],
    hints=[
        "Three moves: make both kinds of embedding unit vectors; score every image against "
        "every caption (a B x B matrix, scaled); then ask each row and each column to put its "
        "probability on the diagonal, where the true pairs sit.",
        "F.normalize(x, dim=-1) gives unit rows. logits = logit_scale.exp() * image @ text.T. "
        "The right answer for row i (and column i) is i: labels = torch.arange(B). "
        "F.cross_entropy(logits, labels) scores the rows; logits.T the columns.",
        "u = F.normalize(image_embeds, dim=-1); w = F.normalize(text_embeds, dim=-1); "
        "logits = logit_scale.exp() * u @ w.T; labels = torch.arange(len(logits)); "
        "return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: cross_attention(x, context, to_q, to_k, to_v, to_out, heads) -> [B, N, query_dim]
# --------------------------------------------------------------------------------------------


def _diffusers_attention(query_dim, context_dim, heads, dim_head):
    from diffusers.models.attention_processor import Attention, AttnProcessor

    with torch.random.fork_rng(devices=[]):  # the layer's own init draws from the global RNG
        layer = Attention(query_dim, cross_attention_dim=context_dim, heads=heads,
                          dim_head=dim_head, bias=False, out_bias=True)
    layer.set_processor(AttnProcessor())  # the plain softmax(QK^T / sqrt(d)) V code path
    return layer.eval()


def _attention_case(name, seed, batch, positions, tokens, query_dim, context_dim, heads,
                    dim_head, hidden=False):
    def make():
        gen = seeded(seed)
        layer = _diffusers_attention(query_dim, context_dim, heads, dim_head)
        with torch.no_grad():
            for linear in (layer.to_q, layer.to_k, layer.to_v, layer.to_out[0]):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen)
                                    / linear.in_features**0.5)
            layer.to_out[0].bias.copy_(0.1 * torch.randn(query_dim, generator=gen))
        return {"x": torch.randn(batch, positions, query_dim, generator=gen),
                "context": torch.randn(batch, tokens, context_dim, generator=gen),
                "to_q": layer.to_q, "to_k": layer.to_k, "to_v": layer.to_v,
                "to_out": layer.to_out[0], "heads": heads}

    def verify(inputs, got):
        layer = _diffusers_attention(query_dim, context_dim, heads, dim_head)
        layer.to_q, layer.to_k, layer.to_v = inputs["to_q"], inputs["to_k"], inputs["to_v"]
        layer.to_out[0] = inputs["to_out"]
        with torch.no_grad():
            expected = layer(inputs["x"], encoder_hidden_states=inputs["context"])
        return compare_tensor("output", got, expected, atol=1e-5, rtol=1e-4)

    side = int(positions**0.5)
    where = f"{side}x{side}" if side * side == positions else f"{positions}"
    label = (f"{name}: {heads} head{'s' if heads > 1 else ''} of width {dim_head}, {where} "
             f"positions, {tokens} token{'s' if tokens > 1 else ''}, query_dim {query_dim}, "
             f"context_dim {context_dim}")
    return Case(label, make, verify, hidden=hidden)


def _attend(x, context, to_q, to_k, to_v, to_out, heads, *, scale="head", axis=-1,
            split=True, keys_from_image=False, project_out=True, mixed_reshape=False):
    """Cross-attention in float64 with one optional slip (the defaults are right)."""
    x64, c64 = x.double(), context.double()
    kv_source = x64 if keys_from_image else c64

    def lin(layer, t):
        return F.linear(t, layer.weight.double(),
                        None if layer.bias is None else layer.bias.double())

    q, k, v = lin(to_q, x64), lin(to_k, kv_source), lin(to_v, kv_source)
    inner = q.shape[-1]
    h = heads if split else 1
    d = inner // h

    def split_heads(t):
        b, n, _ = t.shape
        if mixed_reshape:  # a view straight to [B, h, n, d], without the transpose
            return t.reshape(b, h, n, d)
        return t.view(b, n, h, d).transpose(1, 2)

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    root = {"head": math.sqrt(d), "none": 1.0, "full": math.sqrt(inner)}[scale]
    probs = (q @ k.transpose(-1, -2) / root).softmax(dim=axis)
    out = (probs @ v).transpose(1, 2).flatten(2)
    if project_out:
        out = lin(to_out, out)
    return out.to(x.dtype)


def _attention_mistake(**slip):
    def answer(x, context, to_q, to_k, to_v, to_out, heads):
        return _attend(x, context, to_q, to_k, to_v, to_out, heads, **slip)
    return answer


cross_attention = Exercise(
    name="cross_attention",
    function="cross_attention",
    points=3,
    oracles=("diffusers.models.attention_processor", "diffusers.models.attention",
             "diffusers.models.attention_dispatch",
             "torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention",
             "torch.nn.functional.multi_head_attention_forward"),
    cases=[
        _attention_case("small", 0, 2, 16, 6, 32, 24, 4, 8),
        _attention_case("one head", 1, 1, 64, 8, 16, 12, 1, 16),
        _attention_case("the tiny pipeline's sizes", 2, 2, 64, 16, 64, 64, 4, 16, hidden=True),
        _attention_case("many heads", 3, 3, 16, 10, 64, 48, 8, 8, hidden=True),
        _attention_case("inner width != query_dim", 4, 2, 9, 5, 12, 7, 2, 5, hidden=True),
        _attention_case("a single token", 5, 1, 4, 1, 8, 6, 2, 4, hidden=True),
    ],
    mistakes=[
        Mistake("no 1/sqrt(d) scaling", _attention_mistake(scale="none"),
                "the scores were Q K^T without dividing by sqrt(d), d the width of one head; "
                "unscaled dot products grow with d and push the softmax towards one-hot."),
        Mistake("scaled by the full width", _attention_mistake(scale="full"),
                "the scores were divided by sqrt(heads * d); each head is a dot product over d "
                "channels, so divide by sqrt(d), the width of one head."),
        Mistake("softmax over the image positions", _attention_mistake(axis=-2),
                "the softmax ran over the image positions (dim=-2); each position needs a "
                "distribution over the text tokens, the last axis of the scores [B, h, N, L]."),
        Mistake("heads not split", _attention_mistake(split=False),
                "one attention over all channels at once; split the projections into `heads` "
                "slices of width d, attend in each, and put the slices side by side again."),
        Mistake("heads split with a reshape alone", _attention_mistake(mixed_reshape=True),
                "[B, N, heads * d] was reshaped straight to [B, heads, N, d], which mixes "
                "positions and channels; view it as [B, N, heads, d], then transpose(1, 2)."),
        Mistake("keys and values from the image", _attention_mistake(keys_from_image=True),
                "keys and values came from x (that is self-attention); in cross-attention only "
                "the queries come from the image, keys and values from the text `context`."),
        Mistake("output projection forgotten", _attention_mistake(project_out=False),
                "the heads' outputs were returned as they are; to_out mixes them and maps "
                "them back to the image's channels."),
    ],
    hints=[
        "Queries from the image, keys and values from the text. Each head compares its slice of "
        "the query with its slice of every key, turns the scores of one position into a "
        "distribution over the tokens, and averages the values with it.",
        "q = to_q(x) is [B, N, heads * d]; view it as [B, N, heads, d] and transpose(1, 2) to "
        "[B, heads, N, d] (same for k and v, from context). scores = q @ k.transpose(-1, -2) / "
        "sqrt(d) is [B, heads, N, L]; softmax over the last axis. After probs @ v, transpose "
        "back and flatten the heads before to_out.",
        "b, n, _ = x.shape; d = to_q.out_features // heads; "
        "split = lambda t: t.view(b, -1, heads, d).transpose(1, 2); "
        "q, k, v = split(to_q(x)), split(to_k(context)), split(to_v(context)); "
        "probs = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1); "
        "return to_out((probs @ v).transpose(1, 2).reshape(b, n, heads * d))",
    ],
)

EXERCISES = [clip_loss, cross_attention]
