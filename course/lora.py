"""LoRA: low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Fine-tuning changes a frozen weight W [out, in] by a learnt ΔW. LoRA writes that change as a
product of two thin matrices, ΔW = s · B A with A [r, in], B [out, r] and r much smaller than
in and out, and trains only A and B:

    y = W x + b + s · B (A x),     s = alpha / r            (Hu et al.)
                                    s = alpha / sqrt(r)      (rsLoRA, Kalajdzievski 2023)

B starts at zero, so training starts from the base model exactly; A starts small and random (as
in peft: Kaiming-uniform), so the gradient of B is not zero. After training, ΔW can be added
into W (``merge``): the layer then costs nothing extra at inference, and ``unmerge`` takes it out
again.

This module holds the from-scratch layer the lesson builds (``LoRALinear``), how many weights
LoRA trains (``lora_parameter_count``, on any model, even Stable Diffusion 1.5's U-Net built on
the meta device by ``sd15_unet``), and the glue to the libraries that do it for real: peft's
``LoraConfig`` (``lora_config``) and diffusers' adapter loading, with errors that name the file or
the adapter (``load_adapter``, ``set_adapter_strengths``).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from .logs import only_errors
from .models.registry import ASSETS, ENTRIES, names, verify

#: Stable Diffusion 1.5's U-Net configuration, as its hub repository ships it
#: (stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json): architecture only, no weights
SD15_UNET_CONFIG = ASSETS / "sd15_unet" / "config.json"
#: the attention projections of every attention layer: what diffusers' LoRA scripts target
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_FILE = "pytorch_lora_weights.safetensors"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = base(x) + s · B (A x).

    Args:
        base: the layer to adapt, W [out, in] (and its bias); frozen here.
        r: the rank of the update, >= 1.
        alpha: the scale's numerator; s = alpha / r, or alpha / sqrt(r) with ``rslora``.

    Shapes: ``lora_A`` [r, in], ``lora_B`` [out, r]; x [..., in] -> y [..., out].
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, rslora: bool = False):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear adapts an nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be an int >= 1, got {r!r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scale = alpha / math.sqrt(r) if rslora else alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype,
                                               device=weight.device))
        # peft's default: A ~ Kaiming-uniform (as nn.Linear initialises its weight), B = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype,
                                               device=weight.device))
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B A, [out, in]: what ``merge`` adds to the base weight."""
        return self.scale * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out]. Once merged, the base layer already holds the update."""
        y = self.base(x)
        if self.merged:
            return y
        # s · B (A x): two thin products, never the [out, in] matrix
        return y + self.scale * (x @ self.lora_A.T) @ self.lora_B.T

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s · B A: the same outputs, one matrix product instead of three."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s · B A: the base weight back (to rounding), the update separate again."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        kind = "alpha/sqrt(r)" if self.rslora else "alpha/r"
        return f"r={self.r}, alpha={self.alpha:g}, scale={self.scale:g} ({kind})"


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def matches_target(name: str, targets) -> bool:
    """Whether a module name is targeted, as peft matches a list of names: the whole name, or
    its ending after a dot ("to_out.0" matches "...attn1.to_out.0", not "...to_out.0.x")."""
    return any(name == target or name.endswith("." + target) for target in targets)


def lora_parameter_count(model: nn.Module, r: int, targets=ATTENTION_TARGETS) -> dict:
    """What LoRA of rank ``r`` on the ``targets`` (linear layers) of ``model`` trains.

    Each targeted nn.Linear W [out, in] gets A [r, in] and B [out, r]: r (in + out) weights.
    Works on a model on the meta device (shapes only, no memory).

    Returns:
        {"layers": number of layers adapted, "trainable": LoRA weights, "total": weights of
        the model, "share": trainable / total, "megabytes_fp32": trainable * 4 / 1e6}
    """
    layers = [m for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and matches_target(name, targets)]
    trainable = sum(r * (m.in_features + m.out_features) for m in layers)
    total = sum(p.numel() for p in model.parameters())
    return {"layers": len(layers), "trainable": trainable, "total": total,
            "share": trainable / total, "megabytes_fp32": trainable * 4 / 1e6}


def sd15_unet(device: str = "meta"):
    """Stable Diffusion 1.5's ``UNet2DConditionModel`` built from its shipped config alone.

    On the "meta" device (the default) it has every module and shape but no weights: nothing
    is downloaded and no memory is used, which is enough to count parameters. On "cpu" or
    "cuda" it has random weights (3.4 GB in float32): enough to time training steps.
    """
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    config = json.loads(SD15_UNET_CONFIG.read_text())
    if device == "meta":
        with init_empty_weights():
            return UNet2DConditionModel.from_config(config)
    return UNet2DConditionModel.from_config(config).to(device)


# --------------------------------------------------------------------------------------------
# peft and diffusers
# --------------------------------------------------------------------------------------------


def lora_config(r: int = 4, alpha: float | None = None, targets=ATTENTION_TARGETS,
                init: str | bool = "gaussian", rslora: bool = False):
    """peft's ``LoraConfig`` as diffusers' LoRA training scripts build it for a U-Net:
    ``unet.add_adapter(lora_config(...))``. ``alpha`` defaults to r (scale 1)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=r if alpha is None else alpha, init_lora_weights=init,
                      target_modules=list(targets), use_rslora=rslora)


class AdapterError(ValueError):
    """An adapter that cannot be loaded or used; the message names the file or the adapter."""


def adapter_file(folder_or_file) -> Path:
    """The adapter's weights file: a folder's ``pytorch_lora_weights.safetensors``, a bundled
    adapter's name ("purple"), or a file path. Refuses anything that is not safetensors."""
    path = Path(folder_or_file)
    entry = ENTRIES.get(str(folder_or_file))
    if not path.exists() and entry is not None and entry.kind == "adapter":
        path = verify(entry)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if not candidates:
            others = sorted(p.name for p in path.iterdir() if p.is_file())
            raise AdapterError(f"{path}: no .safetensors adapter file here"
                               + (f" (found {', '.join(others[:4])}; pickled .bin/.pt files are "
                                  "never loaded)" if others else ""))
        path = path / ADAPTER_FILE if (path / ADAPTER_FILE).is_file() else candidates[0]
    if not path.is_file():
        raise AdapterError(f"{path}: no such adapter file or folder (bundled adapters: "
                           f"{', '.join(bundled_adapters()) or 'none'})")
    if path.suffix != ".safetensors":
        raise AdapterError(f"{path}: adapters are read from .safetensors files only; a "
                           f"{path.suffix or 'suffix-less'} file may be a pickle, which can run "
                           "code when loaded")
    return path


def bundled_adapters() -> list[str]:
    """Names of the adapters shipped in the package (the registry's "adapter" entries)."""
    return [name for name in names("adapter") if ENTRIES[name].local_path().is_dir()]


def read_adapter_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header alone (no weights are read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - any parser failure means a damaged file
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise AdapterError(f"{path}: not a readable safetensors file ({reason})") from None


def _check_shapes(pipe, path: Path, shapes: dict[str, list[int]]) -> None:
    """Every LoRA tensor in the file must fit a layer of ``pipe``: A [r, in] and B [out, r] for a
    linear layer, A [r, in, k, k] and B [out, r, 1, 1] for a convolution.
    Names are diffusers' ("unet.<module>.lora_A.weight", or the older "...lora.down.weight" and
    "...lora_linear_layer.down.weight" that ``save_lora_weights`` writes for a text encoder)."""
    owners = {"unet": pipe.unet, "text_encoder": getattr(pipe, "text_encoder", None)}
    for key, shape in shapes.items():
        part, _, rest = key.partition(".")
        for kind, which in ((".lora_A.weight", 1), (".lora_B.weight", 0),
                            (".lora.down.weight", 1), (".lora.up.weight", 0),
                            (".lora_linear_layer.down.weight", 1),
                            (".lora_linear_layer.up.weight", 0)):
            if rest.endswith(kind):
                module_name, axis = rest[: -len(kind)], which
                break
        else:
            continue  # alphas and other metadata tensors
        owner = owners.get(part)
        module = None
        if owner is not None:
            module = dict(owner.named_modules()).get(module_name)
            module = getattr(module, "base_layer", module)  # already wrapped by peft
        if module is None:
            raise AdapterError(f"{path}: made for another model: it adapts {part}.{module_name}, "
                               "which this pipeline does not have")
        if isinstance(module, nn.Conv2d):  # A [r, in, k, k], B [out, r, 1, 1]
            size = module.in_channels if axis == 1 else module.out_channels
        elif isinstance(module, nn.Linear):  # A [r, in], B [out, r]
            size = module.in_features if axis == 1 else module.out_features
        else:
            raise AdapterError(f"{path}: made for another model: {part}.{module_name} is a "
                               f"{type(module).__name__} here, which LoRA does not adapt")
        if len(shape) < 2 or shape[axis] != size:
            side = "in" if axis == 1 else "out"
            matrix = key.rsplit(".", 2)[-2]
            raise AdapterError(f"{path}: made for another model: {part}.{module_name} has "
                               f"{side}_features {size} here, the adapter's {matrix} is {shape}")


def load_adapter(pipe, folder_or_file, adapter_name: str):
    """``pipe.load_lora_weights(...)`` after checking the file: safetensors, readable, and made
    for this pipeline's layers. Returns ``pipe``; AdapterError (one line) otherwise."""
    path = adapter_file(folder_or_file)
    shapes = read_adapter_shapes(path)
    if not shapes:
        raise AdapterError(f"{path}: holds no tensors")
    _check_shapes(pipe, path, shapes)
    if adapter_name in loaded_adapters(pipe):
        raise AdapterError(f"an adapter named {adapter_name!r} is already loaded; unload it or "
                           "choose another name")
    with warnings.catch_warnings(), only_errors("diffusers"):
        # expected with a second adapter, and for a file without text-encoder weights
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        pipe.load_lora_weights(str(path.parent), weight_name=path.name,
                               adapter_name=adapter_name)
    return pipe


def loaded_adapters(pipe) -> list[str]:
    """The adapter names loaded into the pipeline (U-Net and text encoder together)."""
    names = set()
    for network in (pipe.unet, getattr(pipe, "text_encoder", None)):
        config = getattr(network, "peft_config", None) or {}
        names.update(config)
    return sorted(names)


def set_adapter_strengths(pipe, strengths: dict[str, float]) -> None:
    """Activate these adapters with these strengths (``pipe.set_adapters``); every other
    adapter is off. An unknown name is an AdapterError naming the known ones."""
    known = loaded_adapters(pipe)
    unknown = [name for name in strengths if name not in known]
    if unknown:
        raise AdapterError(f"no adapter named {', '.join(map(repr, unknown))} is loaded; "
                           f"loaded: {', '.join(known) or 'none'}")
    for name, value in strengths.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AdapterError(f"adapter {name!r}: strength must be a finite number, got "
                               f"{value!r}")
    pipe.set_adapters(list(strengths), adapter_weights=[float(v) for v in strengths.values()])
