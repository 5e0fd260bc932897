"""``moe-lora`` family: vLLM's MoE experts with its LoRA context (``--enable-lora``), for every token count.

With LoRA enabled vLLM's runner wraps each MoE layer in ``FusedMoEWithLoRA``; the experts' ``apply`` then runs
vLLM's fused MoE-LoRA Triton kernels (``fused_moe_lora``: small-batch, one-shot, or the shrink/expand pair
with ``--fully-sharded-loras`` or rank > 128) beside the base GEMMs, configured by the LoRA rank, the number
of LoRA slots, slices and the token count (tuned JSONs from ``VLLM_TUNED_CONFIG_FOLDER``, else the base MoE
config narrowed to the rank).  The resolution ran vLLM's LoRA manager on the model it built and recorded each
MoE kind's LoRA context (``engines.vllm_moe_lora``); the sweep over M = 1..max_num_batched_tokens ran the
experts with that context (the base kernels as they run next to LoRA, and the LoRA kernels), so every key
here is one vLLM reaches.  Planned like the other MoE families (``fused_moe.plan_kinds``).

Not planned, stated: the dense layers' punica LoRA kernels (``lora_shrink`` / ``lora_expand`` on every
linear vLLM wraps), and experts whose LoRA context cannot be built GPU-less.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, ServingArgs, WorkItem
from ..targets import Target
from .fused_moe import audit_items, has_lora, plan_kinds, recorded_kinds

FAMILY = "moe-lora"

__all__ = ["FAMILY", "audit_items", "plan_family"]  # audit: random M through the same vLLM kernel, per layer kind


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    lora = ((serving.vllm or {}).get("resolved") or {}).get("lora")
    if not lora and serving.vllm is not None:
        return FamilyCoverage(FAMILY, "not-applicable", "LoRA is off (vLLM serve without --enable-lora)"), []
    dense = (f"LoRA (max_loras {lora['max_loras']}, max_lora_rank {lora['max_lora_rank']}"
             f"{', fully sharded' if lora['fully_sharded_loras'] else ''}): the dense layers' punica LoRA kernels "
             f"(lora_shrink / lora_expand on every linear vLLM wraps) are not planned by this aotwarm and compile on "
             f"the node")
    kinds = recorded_kinds(FAMILY, spec, serving)
    if isinstance(kinds, FamilyCoverage):  # no MoE layer: the dense layers' LoRA kernels are still said
        return FamilyCoverage(FAMILY, "not-covered", f"{kinds.summary}; {dense}", uncovered=[*kinds.uncovered, dense]), []
    coverage, items = plan_kinds(FAMILY, [k for k in kinds if has_lora(k)], target)
    coverage.summary = "; ".join(part for part in (coverage.summary, dense) if part)
    coverage.uncovered.append(dense)
    if coverage.status == "not-applicable":
        coverage.status = "not-covered"
    return coverage, items
