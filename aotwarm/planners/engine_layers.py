"""``engine-layers``: one line for every kind of layer vLLM builds for the model -- planned (by which family),
not a JIT, or not covered and why.  No silent path: a layer class these rules do not know is reported as
unclassified (and the test over the fixture models fails on it).

The layer kinds are vLLM's own (``vllm_resolve._module_kinds``: every module class of the model it built,
its bases, whether a vLLM CustomOp is enabled for this config), the attention backends and quant methods are
what vLLM chose.  Containers (modules with children that compute nothing themselves) are skipped; a leaf or a
class with a rule below is stated.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target

FAMILY = "engine-layers"
INDUCTOR = ("its torch code is compiled into the model graph by torch.compile: Inductor kernels in vLLM's "
            "compile cache, not in this bundle")
# attention backends whose kernels are compiled ahead of time in vLLM's wheel (no JIT on the node)
AOT_ATTENTION = ("FLASH_ATTN", "FLASHMLA", "CUTLASS_MLA", "FLASH_ATTN_MLA")


def _name(qualified: str) -> str:
    return qualified.rpartition(":")[2]


def _attention(serving: ServingArgs, kind: str) -> tuple[str, bool]:
    backends = [b.split(":", 1)[1] for b in (serving.vllm.get("resolved", {}).get("attention_backends") or [])
                if b.split(":", 1)[0] == kind]
    if not backends:
        return f"{kind}: vLLM resolved no backend for it", False
    jit = [b for b in backends if b not in AOT_ATTENTION]
    if not jit:
        return f"{kind}: backend {', '.join(backends)} (precompiled in vLLM's wheel, no JIT)", True
    return (f"{kind}: backend {', '.join(backends)} JIT-compiles (FlashInfer modules / Triton attention kernels): "
            f"not planned by this aotwarm -- --attention-backend FLASH_ATTN selects a precompiled one where vLLM "
            f"supports it"), False


def _verdict(kind: dict, serving: ServingArgs, families: set[str]) -> tuple[str, bool] | None:
    """(statement, covered) for one module class, or None for a container that computes nothing itself."""
    cls = _name(kind["class"])
    names = {cls, *(_name(b) for b in kind["bases"])}
    method = kind.get("quant_method")
    if names & {"QwenGatedDeltaNetAttention", "ChunkGatedDeltaRule"}:
        return f"{cls}: Gated DeltaNet kernels -- the gdn family", "gdn" in families
    if names & {"RoutedExperts", "FusedMoE"} or "FusedMoEMethodBase" in names:
        lora = ((serving.vllm or {}).get("resolved") or {}).get("lora")
        family = "moe-lora" if lora else "mxfp4-moe" if "Mxfp4" in (method or "") else "fused-moe"
        return f"{cls}: MoE experts -- the {family} family ({method or 'its method'})", family in families
    if "RMSNormGated" in names:
        return (f"{cls}: " + ("enabled CustomOp: its Triton kernel -- the gdn family" if kind["enabled"] else
                              INDUCTOR)), "gdn" in families or not kind["enabled"]
    if names & {"Attention", "MLAAttention"}:
        return _attention(serving, "MLAAttention" if "MLAAttention" in names else "Attention")
    if "MMEncoderAttention" in names or cls.startswith(("Qwen3_Vision", "Qwen2_5_Vision")):
        return (f"{cls}: multimodal encoder, runs only for image/video inputs: its kernels are not planned", False)
    if "LinearBase" in names:
        if method == "Fp8LinearMethod":
            return f"{cls} (FP8): DeepGEMM / FlashInfer block-scale GEMM -- the deepgemm family", "deepgemm" in families
        if method in (None, "UnquantizedLinearMethod"):
            return f"{cls}: cuBLAS GEMM (no JIT)", True
        return f"{cls}: {method}: a quantized GEMM aotwarm does not plan (checked: not a Triton JIT family here)", False
    if names & {"VocabParallelEmbedding", "ParallelLMHead"}:
        return f"{cls}: embedding lookup / LM-head GEMM (torch ops, no JIT)", True
    if "LogitsProcessor" in names:
        return (f"{cls}: torch ops; vLLM's sampler and input-preparation Triton kernels (the runner's, not the "
                f"model's) are planned (or stated) by the vllm-runtime family (FlashInfer's sampling module: the "
                f"flashinfer family)", False)
    if kind["custom_op"]:
        if kind["enabled"]:
            return (f"{cls}: enabled vLLM CustomOp: its forward_cuda (a compiled CUDA op, or a Triton kernel no "
                    f"family here plans)", False)
        return f"{cls}: {INDUCTOR}", False
    if cls == "IdentityInputNorm":
        return f"{cls}: identity (no kernel)", True
    if kind["class"].startswith("torch.nn.modules.container:"):
        return None
    if kind["class"].startswith("torch.nn.modules.") and kind["children"] == 0:
        return (f"{cls}: torch op: torch's precompiled kernel when run eagerly, Inductor kernels (vLLM's compile "
                f"cache, not this bundle) where torch.compile covers it"), False
    if kind["children"] > 0:
        return None  # a model/block container: its children are stated
    return f"{cls}: unclassified -- aotwarm does not know whether it JIT-compiles", False


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    modules = (serving.vllm or {}).get("modules")
    if modules is None:
        why = "the layer statement needs vLLM's own model: plan with vLLM 0.33 installed (--engine vllm)"
        return FamilyCoverage(FAMILY, "not-covered", why, uncovered=[why]), []
    families = set(serving.families)
    covered, uncovered = [], []
    for kind in modules:
        verdict = _verdict(kind, serving, families)
        if verdict is None:
            continue
        line, ok = verdict
        line = f"{line} [{kind['count']}]"
        (covered if ok else uncovered).append(line)
    summary = (f"{len(covered) + len(uncovered)} layer kinds vLLM builds: {len(covered)} planned or not a JIT, "
               f"{len(uncovered)} not covered (listed)")
    kernels = [KernelCoverage("layers", "planned by a family here, or not a JIT", covered)] if covered else []
    return FamilyCoverage(FAMILY, "stated", summary, kernels, uncovered=uncovered), []


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return []
