"""JSON form of the config objects vLLM builds for a layer (dataclasses, enums, named tuples, dtypes, tensor
geometry), so a build worker can rebuild exactly the objects vLLM made during resolution.

Only classes defined under ``vllm.`` -- and under ``triton_kernels.``, the package vLLM's MXFP4 experts import
(vendored as ``vllm.third_party.triton_kernels``) -- are rebuilt, and only dataclasses, enums and named tuples
among them, plus ``triton_kernels``' weight layouts, which are plain attribute holders (rebuilt with
``__new__`` and their recorded attributes): a plan is data, never code (nothing is unpickled or called by name
beyond a class constructor).
Tensors are recorded as geometry (shape, strides, dtype) and rebuilt as uninitialised tensors on the
device asked for: config objects hold scales and maps whose layout, not content, reaches a kernel key.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any

from ..errors import BadInput

ALLOWED_PREFIXES = ("vllm.", "triton_kernels.")
# plain attribute holders (no dataclass), rebuilt from their attributes: triton_kernels' swizzled layouts
PLAIN_STATE_BASES = ("triton_kernels.tensor_details.layout_details.base:Layout",)


def tensor_geometry(t: Any) -> dict:
    """Shape, strides and dtype name of a tensor (what reaches a kernel key; not its contents)."""
    return {"shape": list(t.shape), "stride": list(t.stride()), "dtype": str(t.dtype).removeprefix("torch.")}


def empty_tensor(g: dict, device: str = "cpu") -> Any:
    """An uninitialised tensor of ``tensor_geometry`` ``g`` on ``device``."""
    import torch

    return torch.empty_strided(g["shape"], g["stride"], dtype=decode({"__dtype__": g["dtype"]}), device=device)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: Any) -> Any:
    """``value`` as JSON-able data (raises TypeError for what it cannot describe)."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": tensor_geometry(value)}
    if isinstance(value, enum.Enum):
        return {"__enum__": _qualname(type(value)), "name": value.name}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": _qualname(type(value)), "fields": fields}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"__namedtuple__": _qualname(type(value)), "items": [encode(v) for v in value]}
    if isinstance(value, (list, tuple)):
        return {"__list__": [encode(v) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if _is_plain_state(type(value)):
        return {"__object__": _qualname(type(value)), "attrs": {k: encode(v) for k, v in sorted(vars(value).items())}}
    raise TypeError(f"cannot describe a {type(value).__module__}.{type(value).__qualname__} as data")


def _is_plain_state(cls: type) -> bool:
    return any(_qualname(base) in PLAIN_STATE_BASES for base in cls.__mro__[1:])


def _class(name: str) -> type:
    module, _, qual = name.partition(":")
    if not module.startswith(ALLOWED_PREFIXES):
        raise BadInput(f"plan names class {name!r}: only vLLM's own config classes are rebuilt")
    if module.startswith("triton_kernels."):  # vLLM puts its vendored copy on the path (or a site-packages one)
        from vllm.utils.import_utils import has_triton_kernels

        if not has_triton_kernels():
            raise BadInput(f"plan names class {name!r}, but this vLLM finds no triton_kernels package")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:
        raise BadInput(f"plan names class {name!r}, whose module this vLLM does not have")
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise BadInput(f"plan names class {name!r}, which this vLLM does not define")
    return obj


def decode(data: Any, device: str = "cpu") -> Any:
    """Rebuild what ``encode`` described (tensors uninitialised, on ``device``)."""
    import torch

    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, dict):
        raise BadInput(f"malformed config data in plan: {type(data).__name__}")
    if "__dtype__" in data:
        dtype = getattr(torch, str(data["__dtype__"]), None)
        if not isinstance(dtype, torch.dtype):
            raise BadInput(f"plan names dtype {data['__dtype__']!r}, which torch does not have")
        return dtype
    if "__device__" in data:  # where vLLM placed it (its GPU, or meta while resolving): here, the rebuild's device
        recorded = torch.device(str(data["__device__"]))
        return torch.device(device) if recorded.type in ("cuda", "meta") else recorded
    if "__tensor__" in data:
        return empty_tensor(data["__tensor__"], device)
    if "__enum__" in data:
        cls = _class(data["__enum__"])
        if not issubclass(cls, enum.Enum):
            raise BadInput(f"plan names {data['__enum__']!r} as an enum")
        return cls[data["name"]]
    if "__dataclass__" in data:
        cls = _class(data["__dataclass__"])
        if not dataclasses.is_dataclass(cls):
            raise BadInput(f"plan names {data['__dataclass__']!r} as a dataclass")
        fields = {k: decode(v, device) for k, v in data["fields"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in fields.items() if k in init})
        for k, v in fields.items():  # exactly the recorded state, whatever __post_init__ derived
            object.__setattr__(obj, k, v)
        return obj
    if "__namedtuple__" in data:
        cls = _class(data["__namedtuple__"])
        if not (issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise BadInput(f"plan names {data['__namedtuple__']!r} as a named tuple")
        return cls(*(decode(v, device) for v in data["items"]))
    if "__object__" in data:
        cls = _class(data["__object__"])
        if not _is_plain_state(cls):
            raise BadInput(f"plan names {data['__object__']!r} as a plain-state object")
        obj = cls.__new__(cls)
        for k, v in data["attrs"].items():
            setattr(obj, str(k), decode(v, device))
        return obj
    if "__list__" in data:
        items = [decode(v, device) for v in data["__list__"]]
        return tuple(items) if data.get("tuple") else items
    if "__dict__" in data:
        return {decode(k, device): decode(v, device) for k, v in data["__dict__"]}
    raise BadInput(f"malformed config data in plan: keys {sorted(data)}")
