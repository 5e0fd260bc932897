"""``mxfp4-moe`` family: the Triton kernels of vLLM's MXFP4 experts (gpt-oss), for every token count.

On sm90 vLLM 0.33 runs MXFP4 experts with ``OAITritonMxfp4ExpertsMonolithic``: the ``triton_kernels``
package vLLM vendors (``vllm.third_party.triton_kernels``, or a site-packages one it prefers) routes the
router's logits (``topk``, bitmatrix sums, routing metadata) and runs ``matmul_ogs`` twice (gate/up with
the fused SwiGLU, down).  Which of them compile for M tokens -- ``block_m`` from tokens per expert, persistent
or not, split-K, the TMA descriptors, every M-derived int Triton specializes (``_topk_forward``'s bitmatrix
stride is a ``constexpr`` that changes every 32 rows) -- is decided by ``triton_kernels``' own ``opt_flags``
and routing code under the virtual target, inside vLLM's kernel object: the resolution built the layer
with vLLM's oracle and ``process_weights_after_loading`` (swizzled weights and their layouts recorded as
data) and swept M = 1..max_num_batched_tokens key-only (``engines.vllm_moe``), exactly as for the other
experts (``fused_moe``: same sweep, same op, same set cover).

Other targets are stated with what runs there (sm100: FlashInfer's TRT-LLM MXFP4 MoE).
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, ServingArgs, WorkItem
from ..targets import Target
from .fused_moe import audit_items, has_lora, is_mxfp4, plan_kinds, recorded_kinds

FAMILY = "mxfp4-moe"
NOTE = ("routing is inside the sweep: vLLM's MXFP4 kernel routes the router logits with triton_kernels' own "
        "Triton kernels (topk, bitmatrix row sums, routing metadata), planned with the GEMMs")


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    kinds = recorded_kinds(FAMILY, spec, serving)
    if isinstance(kinds, FamilyCoverage):
        return kinds, []
    mine = [k for k in kinds if is_mxfp4(k) and not has_lora(k)]
    if not mine:
        methods = sorted({k.get("method", "?") for k in kinds})
        why = ("MXFP4 experts run with vLLM's LoRA context here: the moe-lora family plans them"
               if any(is_mxfp4(k) for k in kinds) else
               f"no MXFP4 experts: vLLM's MoE methods here are {', '.join(methods)} (the fused-moe family)")
        return FamilyCoverage(FAMILY, "not-applicable", why), []
    return plan_kinds(FAMILY, mine, target, notes=(NOTE,))


__all__ = ["FAMILY", "audit_items", "plan_family"]  # audit: random M through the same vLLM kernel, per layer kind
