"""Shared-expert gate family (Qwen2-MoE / Qwen3-MoE / Qwen3-Next / Qwen3.5-MoE): ``sigmoid(x @ w_gate) * out``.

vLLM 0.33 computes it with cuBLAS and elementwise ops (no Triton JIT).  An engine that carries the
fused Triton kernel of vLLM PR #43190 (module ``vllm.model_executor.layers.fused_moe.shared_expert_gate``,
``fused_shared_expert_gate(x, weight, out)``; another module can be named with
``AOTWARM_SHARED_EXPERT_GATE_MODULE``) compiles one kernel per (hidden size, dtype, row-stride class):
``K = hidden`` and ``BLOCK_K`` are constexprs, the row strides are ``hidden`` for the contiguous
activations, and the token count only sizes the grid.
"""

from __future__ import annotations

import importlib.util
import os

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target
from .intmath import int_class

DEFAULT_MODULE = "vllm.model_executor.layers.fused_moe.shared_expert_gate"
MODULE_ENV = "AOTWARM_SHARED_EXPERT_GATE_MODULE"


def gate_module() -> str:
    return os.environ.get(MODULE_ENV) or DEFAULT_MODULE


def engine_has_gate_kernel() -> bool:
    name = gate_module()
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found and os.environ.get(MODULE_ENV):
        raise BadInput(f"{MODULE_ENV}={name} cannot be imported here: fix the module name or PYTHONPATH, or unset it")
    return found


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    family = "shared-expert-gate"
    if not spec.shared_expert_intermediate_size:
        return FamilyCoverage(family, "not-applicable", f"{spec.text_model_type} has no shared expert"), []
    if not engine_has_gate_kernel():
        return FamilyCoverage(family, "not-applicable",
                              f"no JIT kernel in this engine for this family: vLLM {engine.version} computes the "
                              "shared-expert gate with cuBLAS + elementwise ops (no fused gate kernel "
                              f"{gate_module()})"), []
    hidden, dtype = spec.hidden_size, serving.dtype or spec.dtype
    item = WorkItem("shared-expert-gate", family, "vllm.shared_expert_gate",
                    {"hidden": hidden, "dtype": dtype, "tokens": 1, "module": gate_module()},
                    f"one kernel per (hidden {hidden}, {dtype}, row strides {hidden}: class {int_class(hidden)})")
    coverage = FamilyCoverage(family, "planned", f"fused gate kernel from {gate_module()}: hidden {hidden}, {dtype}", [
        KernelCoverage("_fused_shared_expert_gate_kernel", f"tokens 1..{serving.max_num_batched_tokens}", [
            "token count only sizes the grid", f"K = BLOCK_K source = hidden {hidden} (constexpr)",
            f"row strides = hidden {hidden} (class {int_class(hidden)}) for contiguous activations"])])
    return coverage, [item]


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return [WorkItem("audit/shared-expert-gate", i.family, i.op,
                     {**i.params, "tokens": rng.randint(1, serving.max_num_batched_tokens)}, "audit sample")
            for i in items]
