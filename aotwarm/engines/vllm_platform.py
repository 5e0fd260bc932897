"""Make ``vllm.platforms.current_platform`` answer as a CUDA platform before vLLM's kernel modules load.

vLLM resolves its platform lazily through NVML; a GPU-less builder has no NVML, so vLLM would
pick its CPU/unspecified platform and its kernel modules would then choose non-CUDA paths
(``launch_pdl``, ``is_cuda_alike``, SM counts).  The build worker therefore sets the platform
explicitly:

* vLLM's own ``NonNvmlCudaPlatform`` when its compiled ops import (a full vLLM install; on a
  GPU-less builder they load against a ``libcuda.so.1`` stand-in, see ``vllm_node``).  It reads
  ``torch.cuda``, which the virtual device answers as the target GPU;
* otherwise ``TorchCudaPlatform`` below, which answers the queries vLLM's GDN/MoE kernel modules
  make (capability, name, SM count, PDL, CUDA runtime) from ``torch.cuda`` the same way vLLM's
  CUDA platform does.  It exists only for an environment where vLLM's compiled ops cannot load at
  all: vLLM's Python sources next to a CPU-only torch (the Triton 3.6 test leg).  The manifest
  records which one was used.

On a serving node (replay) a platform that vLLM already resolved to CUDA is left alone.
"""

from __future__ import annotations

from typing import Any

PLATFORM_CHOICE: dict[str, str] = {}


def _shim_class() -> type:
    import torch
    from vllm.platforms.interface import DeviceCapability, Platform, PlatformEnum

    class TorchCudaPlatform(Platform):
        """vLLM's CUDA platform answers, read from torch.cuda (no NVML, no compiled extension)."""

        _enum = PlatformEnum.CUDA
        device_name = "cuda"
        device_type = "cuda"
        dispatch_key = "CUDA"
        ray_device_key = "GPU"
        dist_backend = "nccl"
        device_control_env_var = "CUDA_VISIBLE_DEVICES"

        @classmethod
        def get_device_capability(cls, device_id: int = 0) -> Any:
            major, minor = torch.cuda.get_device_capability(device_id)
            return DeviceCapability(major=major, minor=minor)

        @classmethod
        def get_device_name(cls, device_id: int = 0) -> str:
            return torch.cuda.get_device_name(device_id)

        @classmethod
        def get_device_total_memory(cls, device_id: int = 0) -> int:
            return torch.cuda.get_device_properties(device_id).total_memory

        @classmethod
        def num_compute_units(cls, device_id: int = 0) -> int:
            return torch.cuda.get_device_properties(device_id).multi_processor_count

        @classmethod
        def get_cuda_runtime_major(cls) -> int:
            major = (torch.version.cuda or "0").split(".", 1)[0]
            return int(major) if major.isdigit() else 0

        @classmethod
        def is_arch_support_pdl(cls) -> bool:
            return torch.cuda.get_device_capability(torch.cuda.current_device())[0] >= 9

        @classmethod
        def current_device(cls) -> int:
            return torch.cuda.current_device()

        @classmethod
        def support_deep_gemm(cls) -> bool:  # vLLM 0.33 CudaPlatformBase.support_deep_gemm
            major, minor = torch.cuda.get_device_capability(torch.cuda.current_device())
            return (major, minor) == (9, 0) or major in (10, 12)

    return TorchCudaPlatform


def ensure_cuda_platform(force: bool = False) -> str:
    """Set vLLM's current platform to a CUDA platform once per process; returns which one
    ("vllm" or "aotwarm-shim").

    ``force``: replace whatever vLLM resolved (build workers: the builder may have no GPU, so
    vLLM's own resolution would say CPU).  Without it, a CUDA platform vLLM resolves is kept.
    """
    if "platform" in PLATFORM_CHOICE:  # decided earlier in this process
        return PLATFORM_CHOICE["platform"]
    import vllm.platforms as platforms

    if not force:
        try:
            if platforms.current_platform.is_cuda():
                PLATFORM_CHOICE["platform"] = "vllm"
                return "vllm"
        except Exception:  # vLLM could not resolve a platform here; fall through to setting one
            pass
    from .vllm_node import load_compiled_ops, set_platform

    try:
        load_compiled_ops()
        set_platform(gpus=8)
        choice = "vllm"
    except Exception:  # compiled ops not loadable next to this torch (a CPU-only torch)
        platforms._current_platform = _shim_class()()
        choice = "aotwarm-shim"
    PLATFORM_CHOICE["platform"] = choice
    return choice


def setup_worker_device(device: str) -> None:
    """vLLM's platform for a worker that runs engine ops on ``device`` ("cpu": GPU-less build workers)."""
    ensure_cuda_platform(force=(device == "cpu"))
    if device == "cpu":  # build workers hold CPU tensors, on no driver
        from .vllm_node import no_pinned_memory

        no_pinned_memory()
