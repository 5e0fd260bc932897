"""Build op for ``build --from-record``: recompile one recorded Triton key, GPU-less, exactly.

A recorded compile carries the kernel's identity (module, qualified name, source file, its
``JITFunction.cache_key``) and its full specialization (signature, constexprs, attributes, options,
target).  The op imports the kernel, refuses it when its ``cache_key`` is not the recorded one (other
source text, line numbers or dependencies would compile another key), rebuilds the ``ASTSource`` and
calls ``triton.compile`` for the recorded target; the resulting key must be the recorded hash, or the
item fails saying so.  Runs in a build worker under the virtual target GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

# the compile options a launch passes (the JIT's kwargs); the others are derived from the target
JIT_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion", "launch_cooperative_grid",
               "launch_pdl", "debug", "instrumentation_mode", "sanitize_overflow")


def _module(p: dict, device: str) -> Any:
    name = p.get("module")
    if name and name.split(".")[0] == "vllm":  # vLLM's kernel modules read its platform at import
        from ..engines.vllm_platform import ensure_cuda_platform

        ensure_cuda_platform(force=(device == "cpu"))
    if name and name != "__main__":
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("aotwarm_recorded_main", p["file"])
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the recorded kernel's file {p['file']}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jit_function(p: dict, device: str = "cpu") -> Any:
    """The recorded kernel's ``JITFunction``, checked against the recorded source identity."""
    from triton.runtime.jit import JITFunction

    obj: Any = _module(p, device)
    for part in (p.get("qualname") or p["kernel"]).split("."):
        if part == "<locals>" or not hasattr(obj, part):
            raise RuntimeError(f"{p['kernel']} is not importable as {p.get('module')}.{p.get('qualname')} "
                               f"(a kernel defined inside a function cannot be recompiled from a record)")
        obj = getattr(obj, part)
    while not isinstance(obj, JITFunction):
        obj = obj.fn
    if obj.cache_key != p["fn_cache_key"]:
        raise RuntimeError(f"{p['kernel']}: the source here is not the recorded one (cache_key {obj.cache_key[:12]} "
                           f"vs recorded {p['fn_cache_key'][:12]}): same engine build and file needed")
    return obj


def _value(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"tl_dtype"}:  # a Triton dtype passed as a constexpr
        import triton.language as tl

        if str(v["tl_dtype"]) not in tl.dtype.SINT_TYPES + tl.dtype.UINT_TYPES + tl.dtype.FP_TYPES + tl.dtype.OTHER_TYPES:
            raise RuntimeError(f"the record names Triton dtype {v['tl_dtype']!r}, which this Triton does not have")
        return tl.dtype(str(v["tl_dtype"]))
    if isinstance(v, dict):
        raise RuntimeError(f"a constexpr of this key cannot be rebuilt from the record ({v})")
    return tuple(v) if isinstance(v, list) else v


def triton_compile(p: dict, device: str) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = jit_function(p, device)
    signature = {name: kind for name, kind in p["signature"]}
    constexprs = {tuple(path): _value(value) for path, value in p["constants"]}
    attrs = {tuple(path): value for path, value in p["attrs"]}
    arch = int(p["target"]["arch"])
    options = {k: v for k, v in p["options"].items() if k in JIT_OPTIONS}
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                              options=options)
    if compiled.hash != p["hash"]:
        raise RuntimeError(f"{p['kernel']}: recompiled key {compiled.hash[:12]} is not the recorded {p['hash'][:12]} "
                           f"(an option or environment variable differs from the recording)")


OPS = {"triton_compile": triton_compile}
