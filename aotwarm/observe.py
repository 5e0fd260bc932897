"""Observers for what Triton does in a process: compiles (hit or miss), autotune benchmarks, C builds.

``knobs.compilation.listener`` fires on every ``compile()``, with ``cache_hit`` telling a disk hit
from a real compile; it is what verify counts.  ``jit_cache_hook`` fires on an in-memory miss
before compiling; returning True skips the compile, which gives key-only probing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CompileEvent:
    kernel: str
    cache_hit: bool
    entry: str  # the cache entry directory name (base32 of the compile key hash)
    signature: str = ""
    constexprs: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Observer:
    """Collects compile events, JIT keys, autotune benchmarks and C compiler runs in this process."""

    key_only: bool = False
    keep_sources: bool = False  # keep (src, metadata) of each compile, for building launchers
    compiles: list[CompileEvent] = field(default_factory=list)
    sources: list[tuple[Any, dict]] = field(default_factory=list)
    jit_keys: set[tuple[str, str]] = field(default_factory=set)
    benchmarks: list[str] = field(default_factory=list)
    c_builds: list[str] = field(default_factory=list)

    def install(self) -> "Observer":
        from triton import knobs
        from triton.runtime import build as triton_build
        from triton.runtime.autotuner import Autotuner

        # chained: a listener installed before (e.g. `aotwarm record`'s) still sees every compile
        previous_listener, previous_hook = knobs.compilation.listener, knobs.runtime.jit_cache_hook

        def listener(**kwargs: Any) -> None:
            self._on_compile(**kwargs)
            if previous_listener is not None:
                previous_listener(**kwargs)

        def hook(**kwargs: Any) -> bool:
            skip = self._on_jit_miss(**kwargs)
            return bool(previous_hook(**kwargs)) or skip if previous_hook is not None else skip

        knobs.compilation.listener = listener
        knobs.runtime.jit_cache_hook = hook
        original_bench = Autotuner._bench
        benchmarks = self.benchmarks

        def counting_bench(tuner: Any, *args: Any, config: Any, **kwargs: Any):
            benchmarks.append(f"{getattr(tuner.base_fn, '__name__', '?')}: {config}")
            return original_bench(tuner, *args, config=config, **kwargs)

        Autotuner._bench = counting_bench
        original_build = triton_build._build
        c_builds = self.c_builds

        def counting_build(name: str, *args: Any, **kwargs: Any):
            c_builds.append(name)
            return original_build(name, *args, **kwargs)

        triton_build._build = counting_build
        return self

    def _on_compile(self, *, src: Any, metadata: dict, metadata_group: dict, times: Any, cache_hit: bool) -> None:
        any_path = next(iter(metadata_group.values()), "")
        entry = os.path.basename(os.path.dirname(any_path))
        signature = str(getattr(src, "signature", ""))
        constexprs = str(getattr(src, "constants", ""))
        self.compiles.append(CompileEvent(metadata.get("name", "?"), bool(cache_hit), entry, signature, constexprs))
        if self.keep_sources:
            self.sources.append((src, metadata))

    def _on_jit_miss(self, *, key: Any, repr: Any, fn: Any, compile: Any, is_manual_warmup: bool,
                     already_compiled: bool) -> bool:
        self.jit_keys.add((kernel_name(fn), str(key)))
        return self.key_only

    def take(self) -> dict:
        """Return and reset what was observed since the last call."""
        out = {
            "compiles": [c.to_dict() for c in self.compiles],
            "jit_keys": sorted(f"{n}|{k}" for n, k in self.jit_keys),
            "benchmarks": list(self.benchmarks),
            "c_builds": list(self.c_builds),
        }
        self.compiles.clear()
        self.sources.clear()
        self.jit_keys.clear()
        self.benchmarks.clear()
        self.c_builds.clear()
        return out


def kernel_name(fn: Any) -> str:
    """A JIT function's qualified name, or its own name where it was made from a template function
    (``triton_kernels``' ``specialize`` builds ``_matmul_ogs`` from ``define_kernel.<locals>._empty_fn``)."""
    name = str(fn.name)  # the hook's JitFunctionInfo: module, name, jit_function
    short = getattr(getattr(getattr(fn, "jit_function", None), "fn", None), "__name__", None)
    return name if not short or name.rsplit(".", 1)[-1] == short else short
