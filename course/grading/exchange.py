"""Data across the kernel boundary: safetensors for tensors, JSON for the rest, never pickle.

The grader writes a case's tensor inputs with :func:`write_value` into a folder the kernel can
only read; the kernel sends back what the learner's function returned as one message,
:func:`pack_value` (JSON, with the tensors as base64 safetensors). Reading is defensive: an
answer that is too large, not valid, nested too deeply or otherwise odd raises
:class:`ExchangeError` with a reason, which the grader reports as that case failing. Nothing
read here is ever executed or unpickled, and every string in it is escaped for printing.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file, save, save_file

from .text import printable

MAX_TENSOR_BYTES = 256 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
MAX_DEPTH = 6
MAX_ITEMS = 4096


class ExchangeError(ValueError):
    """A file from the other side could not be read as an answer."""


class Foreign:
    """Stands in for a returned object that is not data (a function, a model, ...)."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other) -> bool:
        return isinstance(other, Foreign) and (self.type_name, self.text) == (
            other.type_name, other.text)

    __hash__ = None


def _json_scalar(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}  # JSON has no NaN or inf
    return {"json": value}


def encode(value: Any, tensors: dict[str, torch.Tensor], depth: int = 0) -> Any:
    """A JSON-able description of ``value``; its tensors are added to ``tensors``."""
    if isinstance(value, torch.Tensor) and value.layout == torch.strided:
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").clone().contiguous()
        return {"tensor": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, str):
            value = value[:10_000]
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2 ** 62:
            return {"foreign": "int", "repr": repr(value)[:200]}
        return _json_scalar(value)
    if isinstance(value, (tuple, list)) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS:
        return {"seq": [encode(v, tensors, depth + 1) for v in value],
                "type": "tuple" if isinstance(value, tuple) else "list"}
    if isinstance(value, dict) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS and all(
            isinstance(k, str) for k in value):
        return {"map": {k: encode(v, tensors, depth + 1) for k, v in value.items()}}
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a learner's object whose repr raises
        text = f"<{type(value).__name__}>"
    return {"foreign": type(value).__name__, "repr": text[:200]}


def decode(spec: Any, tensors: dict[str, torch.Tensor], depth: int = 0) -> Any:
    """The value :func:`encode` described; ExchangeError for anything malformed."""
    if depth > MAX_DEPTH + 1 or not isinstance(spec, dict) or len(spec) > 2:
        raise ExchangeError("malformed value description")
    if "tensor" in spec:
        if spec["tensor"] not in tensors:
            raise ExchangeError(f"a tensor is missing: {str(spec['tensor'])[:40]}")
        return tensors[spec["tensor"]]
    if "json" in spec:
        value = spec["json"]
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ExchangeError("malformed scalar")
        return printable(value, 10_000) if isinstance(value, str) else value
    if "float" in spec:
        return float(str(spec["float"]))
    if "seq" in spec and isinstance(spec["seq"], list) and len(spec["seq"]) <= MAX_ITEMS:
        items = [decode(s, tensors, depth + 1) for s in spec["seq"]]
        return tuple(items) if spec.get("type") == "tuple" else items
    if "map" in spec and isinstance(spec["map"], dict) and len(spec["map"]) <= MAX_ITEMS:
        return {str(k): decode(v, tensors, depth + 1) for k, v in spec["map"].items()}
    if "foreign" in spec:
        return Foreign(printable(spec["foreign"], 80), printable(spec.get("repr", ""), 200))
    raise ExchangeError("unknown kind of value")


def write_value(stem: Path, value: Any, extra: dict | None = None) -> None:
    """Write ``value`` as ``stem.safetensors`` (tensors) and ``stem.json`` (the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    spec = encode(value, tensors)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    document = {"value": spec, **(extra or {})}
    stem.with_suffix(".json").write_text(json.dumps(document), encoding="utf-8")
    for suffix in (".safetensors", ".json"):  # readable by a kernel running as another user
        stem.with_suffix(suffix).chmod(0o644)


def read_value(stem: Path) -> tuple[Any, dict]:
    """``(value, document)`` written by :func:`write_value`; ExchangeError if unreadable."""
    json_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        if not json_path.is_file() or json_path.is_symlink():
            raise ExchangeError("no answer was written")
        if json_path.stat().st_size > MAX_JSON_BYTES:
            raise ExchangeError("the answer's description is larger than 1 MB")
        document = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ExchangeError("malformed answer")
        tensors = {}
        if tensor_path.is_file() and not tensor_path.is_symlink():
            if tensor_path.stat().st_size > MAX_TENSOR_BYTES:
                raise ExchangeError("the answer's tensors are larger than 256 MB")
            tensors = load_file(str(tensor_path))
        return decode(document.get("value"), tensors), document
    except ExchangeError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a hostile file makes the parsers do
        raise ExchangeError(f"the answer could not be read ({type(error).__name__})") from None


def pack_value(value: Any, extra: dict | None = None) -> dict:
    """``value`` as one JSON-able document: its description, its tensors as base64 safetensors
    bytes, and ``extra`` (the kernel's side of an answer)."""
    tensors: dict[str, torch.Tensor] = {}
    spec = encode(value, tensors)
    return {"value": spec, "tensors": base64.b64encode(save(tensors)).decode("ascii"),
            **(extra or {})}


def unpack_value(document: Any) -> tuple[Any, dict]:
    """``(value, document)`` from :func:`pack_value`'s document; ExchangeError if unusable."""
    try:
        if not isinstance(document, dict):
            raise ExchangeError("malformed answer")
        encoded = document.get("tensors", "")
        if not isinstance(encoded, str) or len(encoded) > MAX_TENSOR_BYTES * 4 // 3 + 4:
            raise ExchangeError("malformed or oversized tensors")
        tensors = load(base64.b64decode(encoded, validate=True)) if encoded else {}
        return decode(document.get("value"), tensors), document
    except ExchangeError:
        raise
    except (binascii.Error, Exception) as error:  # noqa: BLE001 - whatever a forged answer does
        raise ExchangeError(f"the answer could not be read ({type(error).__name__})") from None
