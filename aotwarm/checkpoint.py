"""Checkpoint weight facts from safetensors headers: which projections are FP8 and their exact shapes.

The config says what a model *should* hold; the checkpoint says what it does (a projection kept in
bf16 by ``modules_to_not_convert`` / ``ignored_layers``, a fused or padded shape).  Only headers are
read — locally the first 8 bytes and the JSON header of each ``*.safetensors`` file; from the hub
``huggingface_hub.get_safetensors_metadata`` (HTTP range requests, no weights downloaded).  The
result is aggregated per projection kind, e.g. ``self_attn.q_proj`` -> {dtypes, shapes, layers}.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from .errors import BadInput
from .model import ModelSource

MAX_HEADER_BYTES = 100 << 20  # safetensors caps headers at 100 MB
_LAYER_WEIGHT = re.compile(r"^(?:model\.|model\.language_model\.|language_model\.model\.)?layers\.(\d+)\.(.+)\.weight$")
_EXPERT = re.compile(r"experts\.\d+\.")


def _local_headers(folder: Path) -> dict[str, dict]:
    tensors: dict[str, dict] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
                if len(head) != 8:
                    raise BadInput(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
                (size,) = struct.unpack("<Q", head)
                if size > MAX_HEADER_BYTES:
                    raise BadInput(f"{path}: safetensors header claims {size} bytes (corrupt or hostile file)")
                header = json.loads(fh.read(size))
        except OSError as err:
            raise BadInput(f"cannot read {path}: {err.strerror}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInput(f"{path}: safetensors header is not valid JSON (corrupt file): re-download it")
        if not isinstance(header, dict):
            raise BadInput(f"{path}: safetensors header is not an object (corrupt file)")
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                tensors[name] = {"dtype": str(info.get("dtype")), "shape": list(info.get("shape") or [])}
    return tensors


def _hub_headers(repo_id: str) -> dict[str, dict]:
    from huggingface_hub import get_safetensors_metadata

    meta = get_safetensors_metadata(repo_id)
    return {name: {"dtype": str(t.dtype), "shape": list(t.shape)}
            for f in meta.files_metadata.values() for name, t in f.tensors.items()}


def aggregate(tensors: dict[str, dict]) -> dict[str, dict]:
    """Per projection kind (layer and expert indices folded): dtypes, shapes, layer count."""
    kinds: dict[str, dict] = {}
    for name, info in tensors.items():
        m = _LAYER_WEIGHT.match(name)
        if not m:
            continue
        kind = _EXPERT.sub("experts.*.", m.group(2))
        entry = kinds.setdefault(kind, {"dtypes": set(), "shapes": set(), "layers": set(), "by_dtype": {}})
        entry["dtypes"].add(info["dtype"])
        entry["shapes"].add(tuple(info["shape"]))
        entry["layers"].add(int(m.group(1)))
        entry["by_dtype"].setdefault(info["dtype"], set()).add(int(m.group(1)))
    return {k: {"dtypes": sorted(v["dtypes"]), "shapes": sorted(list(s) for s in v["shapes"]),
                "layers": len(v["layers"]), "layers_by_dtype": {d: sorted(ls) for d, ls in sorted(v["by_dtype"].items())}}
            for k, v in sorted(kinds.items())}


def read_tensors(source: ModelSource, mode: str = "auto") -> tuple[dict[str, dict], str]:
    """Every tensor's dtype and shape from the checkpoint's safetensors headers, and where they came from
    (``{}`` and the reason when there is nothing to read).

    ``mode``: "auto" reads a local model directory and, for a hub repo, the hub's headers when the hub
    answers; "off" reads nothing.  A hub that cannot be reached is not an error (the config is enough
    to plan); the plan records that the shapes come from the config alone.
    """
    if mode == "off":
        return {}, "checkpoint headers not read (--weights off): shapes from config.json only"
    if source.kind == "directory":
        folder = Path(source.path).parent
        tensors = _local_headers(folder)
        if not tensors:
            return {}, f"no *.safetensors next to the config ({source.path}): shapes from config.json only"
        return tensors, f"safetensors headers in {folder}"
    if source.kind == "hub":
        try:
            tensors = _hub_headers(source.model)
        except Exception as err:  # noqa: BLE001 - offline, gated, no safetensors: plan from the config
            return {}, f"hub headers unavailable ({type(err).__name__}): shapes from config.json only"
        if not tensors:
            return {}, f"no safetensors on the hub for {source.model}: shapes from config.json only"
        return tensors, f"safetensors headers of {source.model} on the hub"
    return {}, "no checkpoint (the bundled config): shapes from config.json only"
