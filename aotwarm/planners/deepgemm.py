"""DeepGEMM family (FP8 block-scaled GEMMs) — not planned by this aotwarm yet; says so.

vLLM 0.33 runs FP8 linears and MoE experts quantized with 128x128 weight blocks through DeepGEMM's
JIT on sm90 / sm100 / sm120 (or, for dense linears on sm90, FlashInfer's block-scale FP8 GEMM when
the installed FlashInfer provides it).  DeepGEMM compiles with nvcc on the target GPU into
``DG_JIT_CACHE_DIR``; none of that is in a Triton bundle.  Until this family is planned, every
plan and manifest for such a model states it as not covered instead of staying silent.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, ServingArgs, WorkItem
from ..targets import Target


def fp8_block_shape(spec: ModelSpec) -> list | None:
    q = spec.quantization or {}
    if str(q.get("quant_method", "")).lower() != "fp8":
        return None
    return q.get("weight_block_size")


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    block = fp8_block_shape(spec)
    if block is None:
        return FamilyCoverage("deepgemm", "not-applicable", "no FP8 block-quantized weights in this config"), []
    major = target.capability[0]
    if list(block) != [128, 128] or major not in (9, 10, 12):
        return FamilyCoverage("deepgemm", "not-applicable",
                              f"FP8 weight blocks {block} on sm{major}{target.capability[1]}: vLLM 0.33 does not use "
                              "DeepGEMM here (CUTLASS / Triton / Marlin FP8 paths)"), []
    why = ("FP8 128x128 block-quantized linears and experts: vLLM 0.33 JIT-compiles DeepGEMM kernels (nvcc, on a GPU "
           "of the target kind) into DG_JIT_CACHE_DIR on first use of each shape; this aotwarm does not plan or "
           "build them yet, so they are not in this bundle")
    return FamilyCoverage("deepgemm", "not-covered", "FP8 128x128 block GEMMs run DeepGEMM's JIT: not planned by "
                          "this aotwarm", uncovered=[why]), []


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return []
