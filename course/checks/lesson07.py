"""Checks for lesson 07, LoRA.

Oracles: peft's own LoRA layer (``peft.tuners.lora.Linear``, what ``inject_adapter_in_model``
and ``get_peft_model`` put in place of every targeted ``nn.Linear``), built around a copy of the
very weight and bias the learner's layer adapts, with the same r, lora_alpha and use_rslora and
the same A and B copied in: its output for ``LoRALinear.forward``, its ``merge()`` and
``unmerge()`` for the merged and restored weights. For ``count_lora_parameters``, peft's
``inject_adapter_in_model`` on a copy of the model, counting the weights it adds. Never this
package's own ``course.lora``.

The learner's ``LoRALinear`` is a class, and a module cannot travel from the learner's kernel to
the grader: ``capture`` turns the layer into data where it was built (its shapes, what trains,
how it starts, and its outputs once the case's A and B are copied in), and that data is judged.

The known mistakes are the slips the lesson warns about, written out below with plain torch as
one layer with a switch per slip.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor, describe

__all__ = ["EXERCISES", "count_lora_parameters", "hint", "lora_forward", "lora_merge"]

#: What the learner's ``LoRALinear(base, r, alpha, rslora)`` is called with; the case's other
#: inputs (the base's weights, A, B and x) are for probing the layer it returns.
LAYER_ARGUMENTS = ("base", "r", "alpha", "rslora")

#: (atol, rtol) by dtype: float32 products over a few dozen inputs round at about 1e-6.
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-8)}


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    atol, rtol = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    return {"atol": atol, "rtol": rtol}


def _scale_text(r, alpha, rslora):
    if rslora:
        return f"s = alpha / sqrt(r) = {alpha / math.sqrt(r):g} (rsLoRA)"
    return f"s = alpha / r = {alpha / r:g}"


# --------------------------------------------------------------------------------------------
# Cases shared by the two layer exercises
# --------------------------------------------------------------------------------------------


def _layer_case(verify, seed, in_features, out_features, r, alpha, rslora=False, batch=(5,),
                dtype=torch.float32, hidden=False):
    """A case: a seeded base layer, the LoRA settings, and the A, B and x to probe it with.

    Inputs: ``base`` nn.Linear W [out, in] with a bias; ``r``, ``alpha``, ``rslora``;
    ``weight`` [out, in] and ``bias`` [out], copies of the base's, so that the oracle cannot be
    spoilt by a layer that changes its base; ``A`` [r, in], ``B`` [out, r] (not zero, as after
    training); ``x`` [*batch, in]. All in ``dtype``.
    """

    def make():
        gen = seeded(seed)
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
            base = nn.Linear(in_features, out_features, dtype=dtype)
        with torch.no_grad():
            base.weight.copy_(torch.randn(out_features, in_features, generator=gen,
                                          dtype=dtype) / math.sqrt(in_features))
            base.bias.copy_(0.1 * torch.randn(out_features, generator=gen, dtype=dtype))
        return {
            "base": base, "r": r, "alpha": alpha, "rslora": rslora,
            "weight": base.weight.detach().clone(), "bias": base.bias.detach().clone(),
            "A": torch.randn(r, in_features, generator=gen, dtype=dtype) / math.sqrt(in_features),
            "B": torch.randn(out_features, r, generator=gen, dtype=dtype) / math.sqrt(r),
            "x": torch.randn(*batch, in_features, generator=gen, dtype=dtype),
        }

    shape = ", ".join(map(str, (*batch, in_features)))
    kind = "" if dtype == torch.float32 else f", {str(dtype).removeprefix('torch.')}"
    label = (f"{in_features} -> {out_features}, r = {r}, alpha = {alpha:g}: "
             f"{_scale_text(r, alpha, rslora)}; x of shape [{shape}]{kind}")
    return Case(label, make, verify, hidden=hidden)


# The same variety for both exercises (seed, in, out, r, alpha, rslora, batch, dtype, hidden).
_LAYER_CASES = [
    dict(seed=0, in_features=16, out_features=12, r=4, alpha=8),
    dict(seed=1, in_features=24, out_features=24, r=9, alpha=12, rslora=True, batch=(2, 5)),
    dict(seed=2, in_features=24, out_features=24, r=2, alpha=3, hidden=True),
    dict(seed=3, in_features=8, out_features=6, r=1, alpha=2, batch=(3,), hidden=True),
    dict(seed=4, in_features=32, out_features=48, r=8, alpha=16, batch=(2, 7), hidden=True),
    dict(seed=5, in_features=20, out_features=10, r=4, alpha=6, rslora=True, batch=(2, 3),
         dtype=torch.float64, hidden=True),
]


def _peft_layer(inputs):
    """peft's LoRA layer around a fresh copy of the case's base layer, with the case's A and B.

    Returns (layer, scale); ``layer.base_layer`` is the wrapped nn.Linear.
    """
    from peft import LoraConfig, inject_adapter_in_model

    weight, bias = inputs["weight"], inputs["bias"]
    out_features, in_features = weight.shape

    class Holder(nn.Module):  # peft adapts named submodules: one named "layer"
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(in_features, out_features, dtype=weight.dtype)

    config = LoraConfig(r=inputs["r"], lora_alpha=inputs["alpha"],
                        use_rslora=inputs["rslora"], init_lora_weights=False,
                        target_modules=["layer"])
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holder = inject_adapter_in_model(config, Holder())
    layer = holder.layer
    with torch.no_grad():
        layer.base_layer.weight.copy_(weight)
        layer.base_layer.bias.copy_(bias)
        layer.lora_A["default"].weight.copy_(inputs["A"])
        layer.lora_B["default"].weight.copy_(inputs["B"])
    return layer, layer.scaling["default"]


def _oracle_output(inputs):
    """peft's output on x, checked once against the formula (a guard against API changes)."""
    layer, scale = _peft_layer(inputs)
    with torch.no_grad():
        expected = layer(inputs["x"])
        x = inputs["x"]
        plain = F.linear(x, inputs["weight"], inputs["bias"]) + scale * (
            x @ inputs["A"].T) @ inputs["B"].T
    assert torch.allclose(expected, plain, **_tolerance(x.dtype)), "peft and the formula disagree"
    return layer, expected


# --------------------------------------------------------------------------------------------
# Turning the learner's layer into data (runs where the learner's code ran)
# --------------------------------------------------------------------------------------------


def _base_inside(inputs, layer):
    """The nn.Linear the layer adapts: the case's ``base`` when the layer holds it, else the
    layer's own nn.Linear of the same shape (a learner may adapt a copy)."""
    base = inputs["base"]
    modules = [m for m in layer.modules() if m is not layer]
    if any(m is base for m in modules):
        return base
    for module in modules:
        if isinstance(module, nn.Linear) and module.weight.shape == base.weight.shape:
            return module
    return base  # not a submodule (say, its weight kept as a parameter): the same tensors


def _prepared(inputs, layer):
    """Check the layer's A and B, and put its base back to the case's weights; returns the base.

    A ValueError says what is wrong in the learner's terms (it becomes the case's error).
    """
    if not isinstance(layer, nn.Module):
        raise ValueError(f"LoRALinear(base, r, alpha, rslora) must give an nn.Module (a class "
                         f"LoRALinear(nn.Module)); got {describe(layer)}")
    out_features, in_features = inputs["weight"].shape
    r, dtype = inputs["r"], inputs["weight"].dtype
    for name, shape, axes in (("lora_A", [r, in_features], "[r, in_features]"),
                              ("lora_B", [out_features, r], "[out_features, r]")):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            got = "nothing" if param is None else describe(param)
            raise ValueError(f"self.{name} must be an nn.Parameter of shape {axes} = {shape}; "
                             f"got {got}")
        if list(param.shape) != shape:
            raise ValueError(f"self.{name}: expected shape {axes} = {shape}, got "
                             f"{list(param.shape)}")
        if param.dtype != dtype:
            raise ValueError(f"self.{name} is {param.dtype}, but the base layer's weight is "
                             f"{dtype}: create lora_A and lora_B in the base weight's dtype")
    base = _base_inside(inputs, layer)
    with torch.no_grad():  # whatever an earlier call did to a shared base layer, undo it
        base.weight.copy_(inputs["weight"])
        if getattr(base, "bias", None) is not None:
            base.bias.copy_(inputs["bias"])
    return base


def _set_lora_weights(inputs, layer):
    with torch.no_grad():
        layer.lora_A.copy_(inputs["A"])
        layer.lora_B.copy_(inputs["B"])


def _output(layer, x):
    with torch.no_grad():
        y = layer(x)
    return y.detach().clone() if isinstance(y, torch.Tensor) else y


def _trainable(layer, base):
    """{parameter name: size} of what would train; the base's parameters are named "base.*"
    whatever the learner called the attribute, so answers compare by meaning."""
    own = {id(p): f"base.{name}" for name, p in base.named_parameters()}
    return {own.get(id(p), name): p.numel() for name, p in layer.named_parameters()
            if p.requires_grad}


def _capture_forward(inputs, layer):
    """The data judged for ``lora_forward``:

    ``trainable`` {name: size}, ``B_starts_at_zero``, ``A_starts_nonzero``, ``starts_at_base``
    (the fresh layer gives base(x)), and ``output`` [*batch, out]: the layer's output on x once
    the case's A and B are copied into lora_A and lora_B.
    """
    base = _prepared(inputs, layer)
    x = inputs["x"]
    data = {
        "trainable": _trainable(layer, base),
        "B_starts_at_zero": bool((layer.lora_B.detach() == 0).all()),
        "A_starts_nonzero": bool((layer.lora_A.detach() != 0).any()),
    }
    fresh = _output(layer, x)
    with torch.no_grad():
        plain = F.linear(x, inputs["weight"], inputs["bias"])
    data["starts_at_base"] = bool(
        isinstance(fresh, torch.Tensor) and fresh.shape == plain.shape
        and fresh.dtype == plain.dtype and torch.allclose(fresh, plain, **_tolerance(x.dtype)))
    _set_lora_weights(inputs, layer)
    data["output"] = _output(layer, x)
    return data


def _capture_merge(inputs, layer):
    """The data judged for ``lora_merge``, with the case's A and B in the layer:

    ``output`` before merging; after ``merge()`` the base's ``merged_weight`` [out, in] and
    ``merged_output``; after ``unmerge()`` the ``unmerged_weight`` and ``unmerged_output``.
    """
    base = _prepared(inputs, layer)
    for method in ("merge", "unmerge"):
        if not callable(getattr(layer, method, None)):
            raise ValueError(f"LoRALinear has no {method}() method: write def {method}(self) "
                             "in the class")
    _set_lora_weights(inputs, layer)
    x = inputs["x"]
    data = {"output": _output(layer, x)}
    layer.merge()  # called as a learner calls it, outside no_grad
    data["merged_weight"] = base.weight.detach().clone()
    data["merged_output"] = _output(layer, x)
    layer.unmerge()
    data["unmerged_weight"] = base.weight.detach().clone()
    data["unmerged_output"] = _output(layer, x)
    return data


def _unreadable(got, keys):
    if not isinstance(got, dict) or not set(keys) <= set(got):
        return f"the check could not read the layer (got {describe(got)})"
    return None


# --------------------------------------------------------------------------------------------
# Exercise 1: LoRALinear's __init__ and forward
# --------------------------------------------------------------------------------------------

_FORWARD_KEYS = ("trainable", "B_starts_at_zero", "A_starts_nonzero", "starts_at_base", "output")


def _verify_forward(inputs, got):
    """Every problem at once, one a line: what trains, how it starts, what it computes."""
    if problem := _unreadable(got, _FORWARD_KEYS):
        return problem
    problems = []
    trainable = set(got["trainable"]) if isinstance(got["trainable"], dict) else set()
    extra, missing = sorted(trainable - {"lora_A", "lora_B"}), {"lora_A", "lora_B"} - trainable
    if extra:
        problems.append(f"trainable besides lora_A and lora_B: {', '.join(extra)}; the base "
                        "layer must be frozen, so that only A and B train")
    if missing:
        problems.append(f"{' and '.join(sorted(missing))} would not train (requires_grad is "
                        "False): they are the weights LoRA trains")
    if got["B_starts_at_zero"] is not True:
        problems.append("lora_B does not start at zero: a fresh LoRA layer must compute exactly "
                        "what the base layer computes, so training starts from the base model")
    if got["A_starts_nonzero"] is not True:
        problems.append("lora_A starts at zero: with B = 0 too, neither gets a gradient and "
                        "training never starts; start A small and random")
    _, expected = _oracle_output(inputs)
    mismatch = compare_tensor("output with the case's A and B", got["output"], expected,
                              **_tolerance(expected.dtype))
    if mismatch:
        problems.append(f"{mismatch} (expected base(x) + s * (x @ A.T) @ B.T, "
                        f"{_scale_text(inputs['r'], inputs['alpha'], inputs['rslora'])})")
    # Said only of an output of the right kind: a wrong shape or a NaN explains it already.
    comparable = mismatch is None or "values differ" in mismatch
    if got["starts_at_base"] is not True and got["B_starts_at_zero"] is True and comparable:
        problems.append("the fresh layer (B = 0) does not give base(x): the base layer's output "
                        "must be part of the result")
    return "\n".join(problems) or None


class _LoRA(nn.Module):
    """LoRA written out with plain torch, with one optional slip per keyword (all off: right).

    ``scale``: "right", "one" (forgotten), "times" (alpha * r), "inverted" (r / alpha),
    "sqrt" (alpha / sqrt(r) always), "plain" (alpha / r always). ``merge``: "right",
    "unscaled", "transposed", "replace", "sign"; ``unmerge``: "right" or "none".
    """

    def __init__(self, base, r, alpha, rslora=False, *, scale="right", freeze=True,
                 keep_base=True, swap=False, init_B="zeros", init_A="random", merge="right",
                 unmerge="right", skip_when_merged=True):
        super().__init__()
        # Set either way: a base shared with an earlier answer may have been frozen by it.
        self.base = base.requires_grad_(not freeze)
        root = math.sqrt(r) if rslora else r
        self.scale = {"right": alpha / root, "one": 1.0, "times": alpha * root,
                      "inverted": root / alpha, "sqrt": alpha / math.sqrt(r),
                      "plain": alpha / r}[scale]
        dtype = base.weight.dtype
        a = torch.empty(r, base.in_features, dtype=dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_A = nn.Parameter(a if init_A == "random" else torch.zeros_like(a))
        b = torch.zeros(base.out_features, r, dtype=dtype)
        self.lora_B = nn.Parameter(b if init_B == "zeros" else torch.randn_like(b) * 0.1)
        self.keep_base, self.swap = keep_base, swap
        self.merge_slip, self.unmerge_slip = merge, unmerge
        self.skip_when_merged, self.merged = skip_when_merged, False

    def forward(self, x):
        y = self.base(x) if self.keep_base else 0.0
        if self.merged and self.skip_when_merged:
            return y
        if self.swap:  # B first, then A: shapes agree only when in == out
            return y + self.scale * (x @ self.lora_B) @ self.lora_A
        return y + self.scale * (x @ self.lora_A.T) @ self.lora_B.T

    def _delta(self):
        delta = self.lora_B @ self.lora_A
        if self.merge_slip == "unscaled":
            return delta
        if self.merge_slip == "transposed":
            return self.scale * delta.T
        return self.scale * delta

    @torch.no_grad()
    def merge(self):
        if self.merged:
            return
        weight = self.base.weight
        if self.merge_slip == "replace":
            weight.copy_(self._delta())
        elif self.merge_slip == "sign":
            weight -= self._delta()
        else:
            weight += self._delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if not self.merged:
            return
        if self.unmerge_slip == "right":
            if self.merge_slip == "sign":
                self.base.weight += self._delta()
            else:
                self.base.weight -= self._delta()
        self.merged = False


def _slip(**how):
    def layer(base, r, alpha, rslora=False):
        return _LoRA(base, r, alpha, rslora, **how)
    return layer


lora_forward = Exercise(
    name="lora_forward",
    function="LoRALinear",
    points=3,
    oracles=("peft", "course.lora"),
    arguments=LAYER_ARGUMENTS,
    capture=_capture_forward,
    cases=[_layer_case(_verify_forward, **settings) for settings in _LAYER_CASES],
    mistakes=[
        Mistake("scale forgotten", _slip(scale="one"),
                "the update B A x was added as it is; LoRA multiplies it by s = alpha / r (or "
                "alpha / sqrt(r) with rsLoRA), so that alpha, not r, sets its strength."),
        Mistake("alpha * r", _slip(scale="times"),
                "the scale multiplied alpha by r; it divides alpha by r (by sqrt(r) with "
                "rsLoRA), so that a larger rank does not make a larger update."),
        Mistake("r / alpha", _slip(scale="inverted"),
                "the scale was r / alpha, upside down: alpha is the numerator."),
        Mistake("rsLoRA's scale for plain LoRA", _slip(scale="sqrt"),
                "alpha / sqrt(r) was used without rslora=True; plain LoRA divides by r, only "
                "rsLoRA by sqrt(r)."),
        Mistake("rsLoRA flag ignored", _slip(scale="plain"),
                "rslora=True was ignored and alpha / r used; rsLoRA divides by sqrt(r) so that "
                "the update does not shrink as the rank grows."),
        Mistake("base left trainable", _slip(freeze=False),
                "the output is right, but the base layer's weight and bias would train too; "
                "LoRA freezes the base (requires_grad_(False)) and trains only A and B."),
        Mistake("base output dropped", _slip(keep_base=False),
                "only the low-rank path s * B A x was returned; the layer adds it to base(x)."),
        Mistake("A and B in the wrong order", _slip(swap=True),
                "the input went through B first and then A, which applies (B A) transposed; "
                "x goes down to r numbers with A ([r, in]), then up with B ([out, r]): "
                "(x @ A.T) @ B.T."),
        Mistake("B starts random", _slip(init_B="random"),
                "lora_B started random, so the fresh layer already differs from the base; B "
                "starts at zero (and A small and random)."),
        Mistake("A starts at zero", _slip(init_A="zeros"),
                "lora_A started at zero as well as B: then neither gets a gradient and nothing "
                "ever trains; A starts small and random."),
    ],
    hints=[
        "The layer keeps the frozen base and adds a thin detour: x goes down to r numbers "
        "through A, back up through B, and is scaled by s. Since B starts at zero, a fresh "
        "layer computes exactly what the base computes.",
        "In __init__: base.requires_grad_(False); self.scale = alpha / r (alpha / math.sqrt(r) "
        "with rslora); self.lora_A = nn.Parameter of shape [r, base.in_features], small and "
        "random; self.lora_B = nn.Parameter(torch.zeros(base.out_features, r)), both in "
        "base.weight's dtype. forward returns base(x) plus self.scale times x through A.T, "
        "then B.T.",
        "self.base = base.requires_grad_(False); "
        "self.scale = alpha / math.sqrt(r) if rslora else alpha / r; "
        "self.lora_A = nn.Parameter(0.01 * torch.randn(r, base.in_features, "
        "dtype=base.weight.dtype)); self.lora_B = nn.Parameter(torch.zeros(base.out_features, "
        "r, dtype=base.weight.dtype)); self.merged = False  # and in forward: "
        "return self.base(x) + self.scale * (x @ self.lora_A.T) @ self.lora_B.T",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: LoRALinear's merge and unmerge
# --------------------------------------------------------------------------------------------

_MERGE_KEYS = ("output", "merged_weight", "merged_output", "unmerged_weight", "unmerged_output")


def _verify_merge(inputs, got):
    """Every problem at once, one a line, in the order they happen."""
    if problem := _unreadable(got, _MERGE_KEYS):
        return problem
    layer, expected = _oracle_output(inputs)
    tolerance = _tolerance(expected.dtype)
    with torch.no_grad():
        layer.merge()
        merged = layer.base_layer.weight.detach().clone()  # W + s B A, from peft
        layer.unmerge()
    scale = _scale_text(inputs["r"], inputs["alpha"], inputs["rslora"])
    checks = [
        ("output before merge()", got["output"], expected, ""),
        ("base weight after merge()", got["merged_weight"], merged,
         f" (expected W + s * B @ A, {scale})"),
        ("output after merge()", got["merged_output"], expected,
         " (merging must not change what the layer computes)"),
        ("base weight after unmerge()", got["unmerged_weight"], inputs["weight"],
         " (unmerge must give the original W back)"),
        ("output after unmerge()", got["unmerged_output"], expected, ""),
    ]
    problems = []
    for name, value, want, why in checks:
        mismatch = compare_tensor(name, value, want, **tolerance)
        if mismatch:
            problems.append(mismatch + why)
    return "\n".join(problems) or None


lora_merge = Exercise(
    name="lora_merge",
    function="LoRALinear",
    points=2,
    oracles=("peft", "course.lora"),
    arguments=LAYER_ARGUMENTS,
    capture=_capture_merge,
    cases=[_layer_case(_verify_merge, **settings) for settings in _LAYER_CASES],
    mistakes=[
        Mistake("merge without the scale", _slip(merge="unscaled"),
                "B @ A was added to the weight without the factor s; the merged weight must "
                "compute what forward computed, W + s * B @ A."),
        Mistake("update counted twice after merging", _slip(skip_when_merged=False),
                "the merged weight is right, but forward still adds the low-rank path, so the "
                "update counts twice; once merged, forward must skip it."),
        Mistake("unmerge does not restore", _slip(unmerge="none"),
                "unmerge() only cleared the flag; it must also take s * B @ A back out of the "
                "weight, or the layer keeps the update (and adds it again)."),
        Mistake("B A transposed", _slip(merge="transposed"),
                "(B @ A).T was added; the update has the weight's layout [out, in] as it is: "
                "B [out, r] @ A [r, in]."),
        Mistake("weight replaced by the update", _slip(merge="replace"),
                "merge() overwrote W with s * B @ A; the update is added to W, not put in its "
                "place."),
        Mistake("merged with the wrong sign", _slip(merge="sign"),
                "merge() subtracted s * B @ A (and unmerge added it); merging adds the update."),
    ],
    hints=[
        "Merging folds the update into the base weight, so that inference needs one matrix "
        "product instead of three; it must not change a single output. unmerge() takes the "
        "update out again.",
        "Delta W = self.scale * self.lora_B @ self.lora_A has the base weight's shape "
        "[out, in]. merge() adds it to self.base.weight in place, under torch.no_grad(), and "
        "sets self.merged = True; forward then returns base(x) alone. unmerge() subtracts it and "
        "sets self.merged = False. Merging twice must not add it twice.",
        "def merge(self): with torch.no_grad(): self.base.weight += self.scale * self.lora_B @ "
        "self.lora_A; self.merged = True  # unmerge: -= and False; forward: "
        "y = self.base(x); return y if self.merged else y + self.scale * "
        "(x @ self.lora_A.T) @ self.lora_B.T",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 3: count_lora_parameters(model, r, target_modules) -> int
# --------------------------------------------------------------------------------------------


def _attention_blocks(dim=32, context=20):
    """Two transformer blocks named as diffusers names them: attn1 (self), attn2 (cross, with
    an IP-Adapter's to_k_ip / to_v_ip beside to_k / to_v), ff; to_out is [Linear, Dropout]."""

    def attention(source, ip=False):
        layers = nn.ModuleDict({
            "to_q": nn.Linear(dim, dim, bias=False), "to_k": nn.Linear(source, dim, bias=False),
            "to_v": nn.Linear(source, dim, bias=False),
            "to_out": nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])})
        if ip:
            layers["processor"] = nn.ModuleDict({
                "to_k_ip": nn.ModuleList([nn.Linear(context, dim, bias=False)]),
                "to_v_ip": nn.ModuleList([nn.Linear(context, dim, bias=False)])})
        return layers

    return nn.ModuleList([nn.ModuleDict({
        "attn1": attention(dim), "attn2": attention(context, ip=True),
        "ff": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
    }) for _ in range(2)])


def _toy_attention():
    """One attention layer with unequal widths, and a norm LoRA must leave alone."""
    return nn.ModuleDict({
        "attn": nn.ModuleDict({"to_q": nn.Linear(16, 32), "to_k": nn.Linear(12, 32),
                               "to_v": nn.Linear(12, 32),
                               "to_out": nn.Sequential(nn.Linear(32, 16), nn.Dropout(0.0))}),
        "norm": nn.LayerNorm(16),
    })


def _joint_attention():
    """Names as in transformers' attention layers (grouped-query: k_proj and v_proj narrower
    than q_proj) beside a joint attention's extra projections: k_proj and v_proj must not catch
    add_k_proj and add_v_proj."""

    def layer():
        return nn.ModuleDict({
            "self_attn": nn.ModuleDict({"q_proj": nn.Linear(24, 24), "k_proj": nn.Linear(24, 8),
                                        "v_proj": nn.Linear(24, 8),
                                        "out_proj": nn.Linear(24, 24)}),
            "context": nn.ModuleDict({"add_k_proj": nn.Linear(40, 8),
                                      "add_v_proj": nn.Linear(40, 8)}),
            "mlp": nn.ModuleDict({"fc1": nn.Linear(24, 96), "fc2": nn.Linear(96, 24)}),
        })

    return nn.ModuleDict({"layers": nn.ModuleList([layer() for _ in range(3)])})


def _tiny_unet(linear_projection=False):
    """A diffusers UNet2DConditionModel a few hundred kB in size, with SD's layer names."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
        attention_head_dim=8, norm_num_groups=8, use_linear_projection=linear_projection)


def _tiny_clip_text():
    """A transformers CLIPTextModel of two layers, width 32 (MLP width 48)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))


def _peft_count(model, r, target_modules):
    """The weights peft's LoRA adds to a copy of ``model``: the parameters named lora_*."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, target_modules=list(target_modules))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = inject_adapter_in_model(config, copy.deepcopy(model))
    return sum(p.numel() for name, p in adapted.named_parameters() if "lora_" in name)


def _count_case(name, build, r, target_modules, seed, hidden=False):
    """The model is built afresh by the oracle (a learner's function may change the one it
    gets), once per process: the count never changes."""
    oracle = []

    def make():
        with torch.random.fork_rng(devices=[]):  # module inits draw from the global RNG
            torch.default_generator.manual_seed(seed)
            model = build()
        return {"model": model, "r": r, "target_modules": list(target_modules)}

    def verify(inputs, got):
        if not oracle:
            oracle.append(_peft_count(make()["model"], r, target_modules))
        expected = oracle[0]
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_complex():
            got = got.item()  # a count is a count, whatever holds it
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"expected the count as an int, got {describe(got)}"
        if got != expected:
            return (f"count: expected {expected:,} trainable LoRA weights for r = {r} on "
                    f"{list(target_modules)}, got {got:,}")
        return None

    targets = ", ".join(map(repr, target_modules))
    return Case(f"{name}: r = {r}, target_modules [{targets}]", make, verify, hidden=hidden)


def _targeted(model, target_modules, how="end"):
    """The nn.Linear layers a name rule picks: "end" is peft's (the whole name, or its ending
    after a dot); "substring", "last part" and "all" are slips."""
    rules = {
        "end": lambda name, t: name == t or name.endswith("." + t),
        "substring": lambda name, t: t in name,
        "last part": lambda name, t: name.rsplit(".", 1)[-1] == t,
        "all": lambda name, t: True,
    }
    rule = rules[how]
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(rule(name, t) for t in target_modules)]


def _count_slip(per_layer, how="end"):
    def count(model, r, target_modules):
        return sum(per_layer(m, r) for m in _targeted(model, target_modules, how))
    return count


def _right_per_layer(m, r):
    return r * (m.in_features + m.out_features)


count_lora_parameters = Exercise(
    name="count_lora_parameters",
    function="count_lora_parameters",
    points=2,
    oracles=("peft", "course.lora"),
    cases=[
        _count_case("one attention layer, unequal widths", _toy_attention, 4, ("to_q", "to_v"),
                    seed=0),
        _count_case("two blocks with attn1, attn2 and an IP-Adapter's to_k_ip / to_v_ip",
                    _attention_blocks, 8, ("to_k", "to_v", "to_out.0"), seed=1),
        _count_case("a tiny diffusers UNet2DConditionModel, SD's LoRA targets", _tiny_unet, 4,
                    ("to_q", "to_k", "to_v", "to_out.0"), seed=2, hidden=True),
        _count_case("a tiny UNet with linear proj_in / proj_out: only the GEGLU's proj",
                    lambda: _tiny_unet(linear_projection=True), 2, ("proj",), seed=3,
                    hidden=True),
        _count_case("a tiny transformers CLIPTextModel", _tiny_clip_text, 8,
                    ("q_proj", "v_proj", "fc1"), seed=4, hidden=True),
        _count_case("k_proj and v_proj beside add_k_proj and add_v_proj", _joint_attention, 16,
                    ("k_proj", "v_proj", "out_proj"), seed=5, hidden=True),
    ],
    mistakes=[
        Mistake("r * in only", _count_slip(lambda m, r: r * m.in_features),
                "only A [r, in] was counted; B [out, r] trains too: r * (in + out) a layer."),
        Mistake("r * out only", _count_slip(lambda m, r: r * m.out_features),
                "only B [out, r] was counted; A [r, in] trains too: r * (in + out) a layer."),
        Mistake("full weight counted", _count_slip(lambda m, r: m.in_features * m.out_features),
                "in * out a layer is the size of W itself, what full fine-tuning trains; LoRA "
                "trains r * (in + out)."),
        Mistake("LoRA layers with biases", _count_slip(lambda m, r: _right_per_layer(m, r)
                                                       + r + m.out_features),
                "A and B were counted with biases (r + out more a layer), as nn.Linear(in, r) "
                "and nn.Linear(r, out) have by default; LoRA's A and B have none."),
        Mistake("substring match", _count_slip(_right_per_layer, "substring"),
                "a target matched every name that contains it ('to_k' in '...to_k_ip.0'); peft "
                "matches the whole name, or its ending after a dot."),
        Mistake("last part of the name only", _count_slip(_right_per_layer, "last part"),
                "only the part after the last dot was compared, so a dotted target such as "
                "'to_out.0' never matched; peft compares the name's ending, dots and all."),
        Mistake("every linear layer", _count_slip(_right_per_layer, "all"),
                "target_modules was ignored: LoRA adapts only the layers it names."),
    ],
    hints=[
        "Each targeted linear layer W [out, in] gets two thin matrices and nothing else. Which "
        "layers are targeted is decided by their names in model.named_modules(), as peft "
        "decides it.",
        "A is [r, in] and B is [out, r]: r * (in + out) weights a layer, no biases. A name is "
        "targeted when it equals a target or ends with '.' + target: 'to_k' matches "
        "'attn1.to_k' but not 'processor.to_k_ip.0'; 'to_out.0' matches 'attn1.to_out.0'.",
        "return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules() "
        "if isinstance(m, nn.Linear) and any(name == t or name.endswith('.' + t) "
        "for t in target_modules))",
    ],
)

EXERCISES = [lora_forward, lora_merge, count_lora_parameters]
