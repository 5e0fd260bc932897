"""Engine adapters: where the kernels come from (fla-core, vLLM), the engine's version and source hash.

An adapter detects the installed engine and exposes *ops*: small functions that call the
engine's own Python entry points with tensors built from a work item's parameters.  The same op
runs in a build worker (CPU tensors, virtual target GPU: every launch becomes a compile) and in
verify's replay (CUDA tensors, the real GPU).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput


@dataclass(frozen=True)
class EngineInfo:
    """What was found installed: name, distribution, version, and a hash of its Python sources.

    Triton's cache key contains each kernel's source text and line number, so a node whose engine
    sources differ by one line misses; ``source_sha256`` lets install/verify refuse that exactly.
    """

    name: str
    distribution: str
    version: str
    source_sha256: str
    location: str

    def to_dict(self) -> dict:
        return asdict(self)


def package_source_sha256(package_dir: Path) -> str:
    """sha256 over (relative path, content) of every .py file under ``package_dir``, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def package_location(package: str, distribution: str) -> Path:
    """Folder of an installed package; BadInput when the distribution is installed but not importable."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"{distribution} is installed but the '{package}' package cannot be found on sys.path")
    return Path(list(spec.submodule_search_locations)[0])


def torch_dtype(name: str):
    """The torch dtype a plan names ("bfloat16", "int32", ...)."""
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
            "int32": torch.int32, "int64": torch.int64}[name]


ENGINES = ("vllm", "fla")  # auto picks the first installed one: the serving engine first


def detect_engine(name: str) -> EngineInfo:
    """Detect the named engine (``auto`` picks the first installed one)."""
    if name == "auto":
        for candidate in ENGINES:
            try:
                return detect_engine(candidate)
            except BadInput:
                continue
        raise BadInput("no supported engine is installed: install the vLLM 0.33 your serving image runs, "
                       "or pip install 'aotwarm[fla]' (fla-core 0.6)")
    if name not in ENGINES:
        raise BadInput(f"unknown engine {name!r}: supported engines are {', '.join(ENGINES)} (or auto)")
    module = importlib.import_module(f"aotwarm.engines.{name}")
    return module.detect()


# op namespaces that are not engines: recompiles of recorded keys (aotwarm record / build --from-record), and
# Triton's driver helper alone (bundles without Triton kernels: the engine still starts Triton's driver)
OTHER_OPS = {"record": "aotwarm.record.recompile", "launchers": "aotwarm.launchers"}


def resolve_op(op: str) -> Callable[..., Any]:
    """Map an op name like ``fla.gdn_chunk_prefill`` to its function."""
    engine, _, fn = op.partition(".")
    if (engine not in ENGINES and engine not in OTHER_OPS) or not fn:
        raise BadInput(f"unknown op {op!r} in plan")
    module = importlib.import_module(OTHER_OPS.get(engine, f"aotwarm.engines.{engine}"))
    func = getattr(module, "OPS", {}).get(fn)
    if func is None:
        raise BadInput(f"unknown op {op!r} in plan (engine {engine} has {', '.join(sorted(getattr(module, 'OPS', {})))})")
    return func
