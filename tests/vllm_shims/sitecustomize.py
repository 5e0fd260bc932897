"""Test environments only: make vLLM 0.33's fused-MoE package importable where vLLM's compiled
extensions cannot load at all: next to a CPU-only torch (the Triton 3.6 test leg) or where they were
not carried (the GPU test machine).  On the real stack (vLLM with its own torch 2.14 build) the
compiled ops load — on a GPU-less machine against aotwarm's driver stand-in — and this does nothing.

Put this folder on PYTHONPATH (tests that plan or build the MoE families do; so do GPU runs).
Importing ``vllm.model_executor.layers.fused_moe`` pulls in two compiled pieces that no planned
kernel uses:

* ``torch.ops._C.cutlass_scaled_mm_supports_block_fp8`` — queried at import to pick CUTLASS for FP8
  block linears; answered False here;
* ``vllm.vllm_flash_attn`` — the flash-attention extension, imported by the attention package on
  the way; a stand-in module that reports it unavailable.

The WNA16 kernel, its config selection and its wrapper are vLLM's own Python/Triton code. With
vLLM's compiled extension present (a real serving image) this file does nothing.
"""

import importlib.util
import sys
import types

CAPABILITY_QUERIES = ("cutlass_scaled_mm_supports_block_fp8",)


def _real_ops_available() -> bool:
    import torch

    return torch.version.cuda is not None and importlib.util.find_spec("vllm._C_stable_libtorch") is not None


def _install() -> None:
    if importlib.util.find_spec("vllm") is None or _real_ops_available():
        return
    import torch

    lib = torch.library.Library("_C", "FRAGMENT")
    for name in CAPABILITY_QUERIES:
        lib.define(f"{name}(int cap) -> bool")
        lib.impl(name, lambda cap: False, "CompositeExplicitAutograd")
    sys.modules["aotwarm_test_vllm_shims"] = types.SimpleNamespace(lib=lib)  # keep the library alive

    fa = types.ModuleType("vllm.vllm_flash_attn")

    def _unavailable(*args, **kwargs):
        raise RuntimeError("vLLM's flash-attention extension is not available in this test environment")

    for name in ("compile_flash_attn_varlen_func_from_specs", "flash_attn_varlen_func", "get_scheduler_metadata",
                 "fa_version_unsupported_reason", "is_fa_version_supported"):
        setattr(fa, name, _unavailable)
    fa.FA2_AVAILABLE = fa.FA3_AVAILABLE = False
    fa.__path__ = []
    sys.modules["vllm.vllm_flash_attn"] = fa


_install()
