"""VirtualDevice: inside a build worker, make Triton and ``torch.cuda`` answer as the target GPU.

With no GPU present, engine code that reads the device (at import or at call time) sees the
target's name, compute capability, SM count and shared memory, so it picks the same kernels,
config lists and block sizes it would pick on that GPU, and Triton computes the same cache keys.
Every kernel launch becomes a compile (``warmup=True``); an autotuned launch compiles every
pruned config and benchmarks nothing.  Nothing is ever executed.

This is the only module that touches Triton's driver and ``torch.cuda`` internals.  It is meant
for child processes: ``install()`` patches process-wide state and ``uninstall()`` restores it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .targets import Target


@dataclass
class AutotuneRecord:
    """One autotune key the engine reached, with the configs that were compiled for it.

    ``disk_key`` is the cache entry where Triton's autotuner looks for stored results
    (``Autotuner.check_disk_cache``); ``identity`` hashes only what makes results reusable
    across environments: the kernel's source key, the tuning-key values and the config list.
    """

    kernel: str
    key: list
    configs: list[str]
    failed_configs: list[str] = field(default_factory=list)
    file_name: str = ""
    disk_key: str = ""
    identity: str = ""
    config_dicts: list[dict] = field(default_factory=list)


class _VirtualProperties:
    """Stands in for ``torch.cuda.get_device_properties()``."""

    def __init__(self, t: Target):
        self.name = t.name
        self.major, self.minor = t.capability
        self.multi_processor_count = t.num_sms
        self.total_memory = t.total_memory
        self.shared_memory_per_block = t.smem_per_block
        self.shared_memory_per_block_optin = t.smem_optin
        self.shared_memory_per_multiprocessor = t.smem_per_sm
        self.warp_size = t.warp_size
        self.L2_cache_size = t.l2_cache_size
        self.regs_per_multiprocessor = t.regs_per_block
        self.max_threads_per_multi_processor = t.max_threads_per_sm
        self.is_integrated = False
        self.is_multi_gpu_board = False
        self.uuid = "00000000-0000-0000-0000-000000000000"
        self.gcnArchName = ""

    def __repr__(self) -> str:
        return f"_VirtualProperties(name={self.name!r}, major={self.major}, minor={self.minor}, sms={self.multi_processor_count})"


class _VirtualUtils:
    """Stands in for Triton's ``CudaUtils`` (``driver.active.utils``)."""

    def __init__(self, t: Target):
        self._t = t

    def get_device_properties(self, device: int = 0) -> dict[str, int]:
        t = self._t
        return {
            "max_shared_mem": t.smem_optin,
            "max_num_regs": t.regs_per_block,
            "multiprocessor_count": t.num_sms,
            "warpSize": t.warp_size,
            "sm_clock_rate": t.sm_clock_khz,
            "mem_clock_rate": t.mem_clock_khz,
            "mem_bus_width": t.mem_bus_width,
        }

    def load_binary(self, *args: Any, **kwargs: Any):
        raise RuntimeError("aotwarm virtual device: kernels are compiled here, never loaded or run")


class _VirtualStream:
    """Stands in for ``torch.cuda.Stream`` (engines create side streams while building layers)."""

    cuda_stream = 0
    stream_id = 0
    device_index = 0
    device_type = 1  # torch's DeviceType.CUDA, as torch.cuda.Stream reports it

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def synchronize(self) -> None:
        return None

    def wait_stream(self, other: Any) -> None:
        return None

    def wait_event(self, event: Any) -> None:
        return None

    def record_event(self, event: Any = None) -> Any:
        return event if event is not None else _VirtualEvent()

    def __enter__(self) -> "_VirtualStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _VirtualEvent:
    """Stands in for ``torch.cuda.Event``."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def record(self, stream: Any = None) -> None:
        return None

    def wait(self, stream: Any = None) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def query(self) -> bool:
        return True


class VirtualDriver:
    """A Triton driver that reports the target GPU and refuses to launch or benchmark."""

    def __init__(self, t: Target):
        from triton.backends.compiler import GPUTarget

        self._target = GPUTarget("cuda", t.arch, t.warp_size)
        self._capability = t.capability
        self.utils = _VirtualUtils(t)
        self.launcher_cls = None

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self):
        return self._target

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        return None

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_capability(self, device: int | None = None) -> tuple[int, int]:
        return self._capability

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def get_device_interface(self):
        import torch

        return torch.cuda

    def map_python_to_cpp_type(self, ty: str) -> str:
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)

    def get_benchmarker(self):
        raise RuntimeError("aotwarm virtual device: benchmarking needs a real GPU")

    def get_empty_cache_for_benchmark(self):
        raise RuntimeError("aotwarm virtual device: benchmarking needs a real GPU")

    def clear_cache(self, cache: Any) -> None:
        return None


class VirtualDevice:
    """Install/uninstall the virtual target GPU in this process.

    ``autotune_records`` lists every autotune key reached while installed.

    Several build workers often reach the same compile keys (every prefill item reaches the same
    chunk kernels).  With ``lock_dir`` set, a compile takes an exclusive lock named after its
    cache-key hash, so a second worker waits and then hits the first one's entry instead of
    compiling it again; ``rotate`` starts each worker's walk over an autotune key's configs at a
    different config, so workers on the same key compile different configs side by side.
    """

    def __init__(self, target: Target, lock_dir: str | None = None, rotate: int = 0):
        self.target = target
        self.lock_dir = lock_dir
        self.rotate = rotate
        self.autotune_records: list[AutotuneRecord] = []
        self._saved: list[tuple[Any, str, Any]] = []
        self._installed = False

    # -- patching helpers -------------------------------------------------------------------
    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name, None)))
        setattr(owner, name, value)

    def install(self) -> "VirtualDevice":
        if self._installed:
            return self
        import torch
        from triton.runtime.driver import driver as driver_config
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction

        # torch._dynamo builds a rule map over torch.cuda's functions on first use; build it from the
        # real functions before any of them is replaced.
        import torch._dynamo  # noqa: F401

        t = self.target
        props = _VirtualProperties(t)
        cuda = torch.cuda

        class _DeviceContext(contextlib.nullcontext):
            def __init__(self, device: Any = None):
                super().__init__()
                self.idx = 0

        self._patch(cuda, "is_available", lambda: True)
        self._patch(cuda, "is_initialized", lambda: True)
        self._patch(cuda, "_lazy_init", lambda: None)
        self._patch(cuda, "device_count", lambda: 1)
        self._patch(cuda, "current_device", lambda: 0)
        self._patch(cuda, "set_device", lambda device=None: None)
        self._patch(cuda, "synchronize", lambda device=None: None)
        self._patch(cuda, "get_device_name", lambda device=None: t.name)
        self._patch(cuda, "get_device_capability", lambda device=None: t.capability)
        self._patch(cuda, "get_device_properties", lambda device=None: props)
        self._patch(cuda, "get_arch_list", lambda: [f"sm_{t.arch}"])
        self._patch(cuda, "is_bf16_supported", lambda including_emulation=True: t.capability[0] >= 8)
        self._patch(cuda, "mem_get_info", lambda device=None: (t.total_memory, t.total_memory))
        self._patch(cuda, "current_stream", lambda device=None: _VirtualStream())
        self._patch(cuda, "default_stream", lambda device=None: _VirtualStream())
        self._patch(cuda, "device", _DeviceContext)
        self._patch(cuda, "Stream", _VirtualStream)
        self._patch(cuda, "Event", _VirtualEvent)
        self._patch(cuda, "stream", lambda stream=None: contextlib.nullcontext())
        if hasattr(torch, "accelerator"):  # engines ask it which device is current (vLLM's sampler choice)
            self._patch(torch.accelerator, "current_device_index", lambda: 0)

        self._patch(driver_config, "_active", VirtualDriver(t))

        original_run = JITFunction.run

        def compile_instead_of_launch(fn_self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any):
            return original_run(fn_self, *args, grid=grid, warmup=True, **kwargs)

        self._patch(JITFunction, "run", compile_instead_of_launch)
        self._patch(Autotuner, "run", self._make_autotune_run(Autotuner))
        if self.lock_dir:
            import triton.compiler as triton_compiler

            self._patch(triton_compiler, "compile", _locked_compile(triton_compiler.compile, self.lock_dir))
        self._installed = True
        return self

    def uninstall(self) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved.clear()
        self._installed = False

    def __enter__(self) -> "VirtualDevice":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    # -- autotuning without a GPU -----------------------------------------------------------
    def _make_autotune_run(self, autotuner_cls: type) -> Callable[..., Any]:
        """Compute the tuning key exactly as ``Autotuner.run`` does, then compile every pruned config."""
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources, PTXASError

        records = self.autotune_records

        def run(tuner: Any, *args: Any, **kwargs: Any):
            tuner.nargs = dict(zip(tuner.arg_names, args))
            name = _base_name(tuner)
            if len(tuner.configs) > 1:
                all_args = {**tuner.nargs, **kwargs}
                _args = {k: v for (k, v) in all_args.items() if k in tuner.arg_names}
                key = [_args[k] for k in tuner.keys if k in _args]
                for _, arg in _args.items():
                    if hasattr(arg, "dtype"):
                        key.append(str(arg.dtype))
                configs = tuner.prune_configs(kwargs)
            else:
                key, configs = [], list(tuner.configs)
            record = AutotuneRecord(name, [_jsonable(k) for k in key], [str(c) for c in configs])
            if key:
                _describe_disk_cache(record, tuner, tuple(key), configs)
            ret = None
            start = self.rotate % len(configs) if configs else 0
            for config in configs[start:] + configs[:start]:
                try:
                    ret = tuner.fn.run(*args, **kwargs, **config.all_kwargs())
                except (OutOfResources, PTXASError, CompilationError) as err:
                    # On a GPU the autotuner scores such a config as inf; record it and go on.
                    record.failed_configs.append(f"{config}: {type(err).__name__}")
            records.append(record)
            tuner.nargs = None
            return ret

        return run


def _describe_disk_cache(record: AutotuneRecord, tuner: Any, tuning_key: tuple, configs: list) -> None:
    """Fill in where Triton's autotuner stores results for this key, computed as it does."""
    import base64
    import hashlib

    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.compiler.compiler import make_backend
    from triton.runtime.cache import triton_key
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    fn = tuner.fn
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    env_vars = get_cache_invalidating_env_vars()
    parts = [triton_key(), make_backend(driver.active.get_current_target()).hash(), fn.cache_key,
             str(sorted(env_vars.items())), str(tuning_key)] + [str(c) for c in configs]
    digest = hashlib.sha256("-".join(parts).encode("utf-8")).hexdigest()
    record.disk_key = base64.b32encode(bytes.fromhex(digest)).decode().rstrip("=")
    record.file_name = f"{fn.__name__[:150]}.autotune.json"
    ident = "-".join([fn.cache_key, str(tuning_key)] + [str(c) for c in configs])
    record.identity = hashlib.sha256(ident.encode()).hexdigest()
    record.config_dicts = [_config_dict(c) for c in configs]


def _config_dict(config: Any) -> dict:
    """``Config.__dict__`` as Triton writes it in ``configs_timings`` (JSON-safe)."""
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), dict, list)) else str(v))
            for k, v in config.__dict__.items()}


def _locked_compile(compile_fn: Callable[..., Any], lock_dir: str) -> Callable[..., Any]:
    """Wrap ``triton.compile`` so one process at a time compiles a given cache key."""
    import fcntl
    import hashlib
    import os

    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.compiler.compiler import get_cache_key, make_backend

    os.makedirs(lock_dir, exist_ok=True)

    def compile(src: Any, target: Any = None, options: Any = None, _env_vars: Any = None):
        backend = make_backend(target)
        parsed = backend.parse_options(dict(options or {}, **src.parse_options()))
        env_vars = get_cache_invalidating_env_vars() if _env_vars is None else _env_vars
        key = hashlib.sha256(get_cache_key(src, backend, parsed, env_vars=env_vars).encode()).hexdigest()
        with open(os.path.join(lock_dir, key[:32] + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return compile_fn(src, target=target, options=options, _env_vars=_env_vars)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    return compile


def _base_name(tuner: Any) -> str:
    """The name of the innermost JIT function under an autotuner (and any heuristics around it)."""
    from triton.runtime.jit import JITFunction

    fn = tuner.fn
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    return fn.__name__


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
