"""A virtual serving node for vLLM's own Python code: what it needs to run on a GPU-less builder.

vLLM decides everything that enters a kernel's compile key (serving defaults, block and page sizes,
attention and GDN backends, KV-cache layout and strides) in Python, at config and model-build time.
aotwarm runs that code instead of re-deriving it.  On a builder with no GPU it needs:

* **its compiled ops to import** (``vllm/_C_stable_libtorch.abi3.so``...): they only need a
  ``libcuda.so.1`` to bind against — ``driverstub`` provides one where the driver is absent;
* **a CUDA platform**: vLLM's own ``NonNvmlCudaPlatform`` (it reads ``torch.cuda``, which the
  virtual device answers as the target GPU), on a node with ``gpus`` such GPUs;
* **process groups**: model code asks for its tensor-parallel rank and size.  A single-process gloo
  world is created and the tensor/expert-parallel groups are presented as rank 0 of the configured
  size: every rank of these groups builds the same layer shapes, so rank 0 stands for all;
* **no weight memory**: ``meta_allocations`` turns every CUDA allocation into a meta tensor, so a
  whole model is built (layer objects, their KV-cache specs, backend choices) without memory.

Only the build workers and the resolution child enter this; a serving node never does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

# vLLM's top-level compiled extensions and the flash-attention ones it may import while choosing a backend
_SO_FOLDERS = ("", "vllm_flash_attn")


def vllm_shared_objects(location: Path) -> list[Path]:
    return sorted(p for sub in _SO_FOLDERS for p in (location / sub).glob("*.so"))


def load_compiled_ops() -> str:
    """Import vLLM's compiled ops (with the driver stub where no driver exists).

    Returns a short description of how they were loaded; raises ImportError with vLLM's reason
    when they cannot be (e.g. vLLM's wheel next to a torch it was not built for).
    """
    import importlib.util

    from ..driverstub import load_stub_for

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("vLLM is not installed")
    location = Path(list(spec.submodule_search_locations)[0])
    stub = load_stub_for(vllm_shared_objects(location))
    import vllm._C_stable_libtorch  # noqa: F401

    with contextlib.suppress(ImportError):  # optional for vLLM too (CudaPlatform.import_kernels)
        import vllm._moe_C_stable_libtorch  # noqa: F401

    return "vllm compiled ops loaded against " + ("a libcuda stand-in (no driver here)" if stub else "the driver")


def set_platform(gpus: int) -> Any:
    """Make vLLM's own CUDA platform current, on a node with ``gpus`` GPUs of the (virtual) target."""
    import vllm.platforms as platforms
    from vllm.platforms.cuda import NonNvmlCudaPlatform

    class VirtualNodeCudaPlatform(NonNvmlCudaPlatform):
        """vLLM's CUDA platform; only the GPU count of the node is given (it has no NVML to ask).  vLLM's
        Python custom ops (``direct_register_custom_op``: e.g. ``vllm::fused_moe_lora``, whose body launches
        Triton kernels) register their implementation for the platform's dispatch key: here the tensors are
        CPU tensors on the virtual GPU, so the key is ``CPU`` (vLLM's compiled CUDA ops are unaffected)."""

        dispatch_key = "CPU"

        @classmethod
        def device_count(cls) -> int:
            return gpus

    platform = VirtualNodeCudaPlatform()
    platforms._current_platform = platform
    _answer_device_attributes()
    return platform


def _answer_device_attributes() -> None:
    """vLLM's compiled device-attribute queries, answered as the (virtual) GPU's properties answer them: the
    opt-in shared memory per block decides kernel variants (e.g. the fused MoE-LoRA one-shot kernel)."""
    import torch
    import vllm._custom_ops as ops

    def max_shared_memory_per_block(device_id: int | None = 0) -> int:
        return int(torch.cuda.get_device_properties(device_id or 0).shared_memory_per_block_optin)

    ops.get_max_shared_memory_per_block_device_attribute = max_shared_memory_per_block


def no_pinned_memory() -> None:
    """A node without a GPU driver cannot pin host memory: vLLM's host->device staging (``async_tensor_h2d``,
    LoRA and block-table metadata) would ask for it.  A copy detail no kernel key depends on."""
    import sys

    import vllm.utils.torch_utils as torch_utils

    torch_utils.PIN_MEMORY = False
    for name, module in list(sys.modules.items()):  # modules that imported the flag by name (vllm.lora.*)
        if name.startswith("vllm.") and getattr(module, "PIN_MEMORY", None) is True:
            module.PIN_MEMORY = False


class _RankZero:
    """A process group seen from its rank 0, with the size the parallel config asks for."""

    def __init__(self, real: Any, size: int):
        self._real = real
        self.world_size = size
        self.rank_in_group = 0
        self.ranks = list(range(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def process_groups(vllm_config: Any) -> Iterator[None]:
    """A one-process gloo world whose tensor/expert-parallel groups answer as rank 0 of the configured size."""
    import vllm.distributed.parallel_state as ps
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    par = vllm_config.parallel_config
    with tempfile.TemporaryDirectory(prefix="aotwarm-dist-") as tmp, set_current_vllm_config(vllm_config):
        init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                     distributed_init_method=f"file://{Path(tmp) / 'store'}", backend="gloo")
        initialize_model_parallel(1)
        tp, dp = par.tensor_parallel_size, par.data_parallel_size
        saved = {name: getattr(ps, name) for name in ("_TP", "_EP", "_DP") if getattr(ps, name, None) is not None}
        if tp > 1 and "_TP" in saved:
            ps._TP = _RankZero(saved["_TP"], tp)
        if dp > 1 and "_DP" in saved:
            ps._DP = _RankZero(saved["_DP"], dp)
        if par.enable_expert_parallel and "_EP" in saved:
            ps._EP = _RankZero(saved["_EP"], tp * dp)
        try:
            yield
        finally:
            for name, group in saved.items():
                setattr(ps, name, group)


def meta_allocations():
    """A torch function mode that allocates every CUDA tensor (and every unplaced factory tensor) on ``meta``."""
    import torch
    from torch.overrides import TorchFunctionMode

    factories = {torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.rand, torch.randn,
                 torch.randint, torch.empty_strided, torch.tensor, torch.eye, torch.linspace}

    class CudaAllocationsOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            device = kwargs.get("device")
            if device is not None and (isinstance(device, int) or "cuda" in str(device)):
                kwargs["device"] = "meta"
            elif device is None and func in factories:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    return CudaAllocationsOnMeta()


def quiet_vllm_logging() -> None:
    """vLLM logs every decision at INFO; the resolution child keeps warnings only (unless asked)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
