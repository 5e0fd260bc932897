"""Record the Triton kernel launches a process makes (CPU, virtual GPU) and replay them on a real GPU.

A launch is recorded at ``kernel[grid](*args, **kwargs)`` — the outermost object (an autotuner, a
heuristics wrapper or the JIT function itself), so a replay goes through the same autotuning and
specialization as the original call.  For each argument the replay needs what reaches the JIT key:
tensors by dtype, shape, strides and pointer alignment (``data_ptr % 256``), with the values of small
integer/bool tensors (indices, sequence starts: a replay must stay in bounds) and zeros elsewhere;
scalars by value.  The grid is not replayed (one program instance: it never enters a key, and one
program cannot run past the tensors the original launch used).

Launches are de-duplicated by (kernel, the JIT key Triton computed for them); ``count`` says how
often each was made.  Nothing here knows aotwarm's plans: it replays what the engine did.
"""

from __future__ import annotations

import importlib
from typing import Any

_SMALL = 1 << 14  # integer tensors up to this many elements are recorded with their values


def _encode(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        small = value.numel() <= _SMALL and (value.dtype in (torch.bool, torch.int8, torch.int16, torch.int32,
                                                              torch.int64, torch.uint8))
        return {"tensor": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                "stride": list(value.stride()), "align": value.data_ptr() % 256,
                "values": value.detach().cpu().reshape(-1).tolist() if small and value.numel() else None}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).removeprefix("torch.")}
    import triton.language as tl

    if isinstance(value, tl.dtype):
        return {"tl_dtype": str(value)}
    if isinstance(value, (tuple, list)):
        return {"seq": [_encode(v) for v in value], "tuple": isinstance(value, tuple)}
    raise TypeError(f"cannot record a launch argument of type {type(value).__name__}")


def _innermost(kernel: Any) -> Any:
    from triton.runtime.jit import JITFunction

    fn = kernel
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    return fn


class Recorder:
    """Wraps ``KernelInterface.__getitem__``; keeps one launch per (kernel, JIT key) with a count."""

    def __init__(self) -> None:
        self.launches: dict[str, dict] = {}
        self._pending: dict | None = None
        self.total = 0

    def install(self) -> "Recorder":
        from triton import knobs
        from triton.runtime.jit import KernelInterface

        recorder = self
        original = KernelInterface.__getitem__

        def getitem(kernel: Any, grid: Any):
            launch = original(kernel, grid)

            def recorded(*args: Any, **kwargs: Any):
                fn = _innermost(kernel)
                recorder._pending = {"module": fn.fn.__module__, "name": fn.__name__,
                                     "args": [_encode(a) for a in args],
                                     "kwargs": {k: _encode(v) for k, v in kwargs.items()}}
                recorder.total += 1
                try:
                    return launch(*args, **kwargs)
                finally:
                    recorder._pending = None

            return recorded

        KernelInterface.__getitem__ = getitem
        previous = knobs.runtime.jit_cache_hook

        def on_key(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
            pending = recorder._pending
            if pending is not None:
                ident = f"{fn.name}|{key}"
                entry = recorder.launches.setdefault(ident, {**pending, "key": ident, "count": 0})
                entry["count"] += 1
            return previous(key=key, repr=repr, fn=fn, compile=compile, is_manual_warmup=is_manual_warmup,
                            already_compiled=already_compiled) if previous else False

        knobs.runtime.jit_cache_hook = on_key
        return self


def _decode(spec: Any, device: str) -> Any:
    import torch

    if "value" in spec:
        return spec["value"]
    if "torch_dtype" in spec:
        return getattr(torch, spec["torch_dtype"])
    if "tl_dtype" in spec:
        import triton.language as tl

        return getattr(tl, spec["tl_dtype"])
    if "seq" in spec:
        items = [_decode(s, device) for s in spec["seq"]]
        return tuple(items) if spec["tuple"] else items
    dtype = getattr(torch, spec["tensor"])
    itemsize = torch.empty(0, dtype=dtype).element_size()
    extent = 1 + sum((n - 1) * st for n, st in zip(spec["shape"], spec["stride"])) if all(spec["shape"]) else 0
    buf = torch.zeros(spec["align"] + extent * itemsize + 256, dtype=torch.uint8, device=device)
    shift = (-buf.data_ptr() % 256) + spec["align"]  # the recorded pointer alignment
    t = torch.empty(0, dtype=dtype, device=device)
    t.set_(buf.untyped_storage(), shift // itemsize, spec["shape"], spec["stride"])
    if spec["values"] is not None:
        t.copy_(torch.tensor(spec["values"], dtype=dtype).reshape(spec["shape"]))
    return t


def replay(launches: list[dict], device: str = "cuda") -> int:
    """Launch each recorded kernel once with arguments of the recorded geometry; returns how many ran."""
    seen: set[str] = set()
    for launch in launches:
        import json

        ident = json.dumps([launch["module"], launch["name"], launch["args"], launch["kwargs"]], sort_keys=True)
        if ident in seen:  # an autotuned launch is recorded once per config key; the replay tunes it again
            continue
        seen.add(ident)
        kernel = getattr(importlib.import_module(launch["module"]), launch["name"])
        args = [_decode(a, device) for a in launch["args"]]
        kwargs = {k: _decode(v, device) for k, v in launch["kwargs"].items()}
        kernel[(1,)](*args, **kwargs)
    return len(seen)
