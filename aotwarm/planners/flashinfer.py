"""``flashinfer``: the FlashInfer nvcc JIT modules a vLLM node loads for this config, built GPU-less.

What vLLM loads is decided by vLLM's own call sites in the resolution child (``engines.vllm_flashinfer``):
its sampler choice (``flashinfer_sampler_supported``) and sampling calls, and the FlashInfer kernel its
FP8 block-scale linears chose.  Each module is named by FlashInfer itself (its ``gen_*`` function gives
the spec; the build calls the same function).  One work item per module: nvcc for the target arch
(``FLASHINFER_CUDA_ARCH_LIST``), no GPU, shipped as an AOT artifact (``kinds.flashinfer``).

``fp8_blockscale_gemm_90`` itself compiles TRT-LLM DeepGEMM cubins with nvcc per GEMM shape at run time
(swapAB, M < 32; the config comes from C++ heuristics over M and the SM count the GPU reports): one item
per FP8 linear shape, M = 1..31, built on a GPU of the target kind like DeepGEMM's (``needs_gpu``; a
GPU-less build says not-built and ``--add`` merges a part built there).

Stated, not built: the TP > 1 all-reduce fusion module, and the CuTe DSL kernels FlashInfer and vLLM
compile in memory in every process (no disk cache exists to ship).
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target

FAMILY = "flashinfer"
OP = "flashinfer.module"
NESTED_OP = "flashinfer.trtllm_dg_swapab"
SWAPAB_BELOW = 32  # vLLM 0.33's FlashInferFp8DeepGEMMDynamicBlockScaledKernel: M < 32 runs FlashInfer's GEMM


def _uncovered(serving: ServingArgs, target: Target, facts: dict) -> list[str]:
    out: list[str] = []
    resolved = serving.vllm.get("resolved", {})
    if int(resolved.get("tensor_parallel_size", serving.tp)) > 1:
        out.append("TP > 1: FlashInfer's all-reduce + RMSNorm fusion module (trtllm_comm), when vLLM's compile "
                   "pass uses it, is not planned")
    classes = {k.get("class", "").rpartition(":")[2] for k in serving.vllm.get("modules", [])}
    gdn = serving.vllm.get("gdn") or {}
    if "flashinfer" in str(gdn.get("prefill_backend", "")).lower():
        line = f"GDN prefill through FlashInfer (vLLM's choice here: {gdn.get('prefill_backend')}) is CuTe DSL "
        line += ("compiled in memory in every process: nothing to ship" if target.capability[0] == 9 else
                 "(on Blackwell in FlashInfer's own disk cache, keyed by absolute site-packages paths and the SM "
                 "count): not in this bundle")
        if target.capability[0] == 9:
            line += (" -- measured on an H200: 10.6 s for the first variant plus 4.5 s for the use_cp=False variant "
                     "vLLM's warm-up also compiles, in every process, then 0.6-0.8 ms per prefill call (T 64..8192); "
                     "--gdn-prefill-backend triton runs the Triton chunk prefill this bundle ships: first call 1.4 s "
                     "from the bundle's cache (81 s cold), 1.7-3.4 ms per call. Prefer triton where start-up time "
                     "matters, FlashInfer where prefill throughput does (docs/benchmarks.md)")
        else:
            line += "; --gdn-prefill-backend triton runs the Triton chunk prefill this bundle can ship instead"
        out.append(line)
    if "GateLinear" in classes and target.capability[0] >= 9:
        out.append("MoE router GateLinear: vLLM's CuTe DSL bf16 router GEMM is compiled in memory at warm-up in "
                   "every process (M 1..16; no disk cache to ship) -- measured on an H200: 2.0 s (K 2048, N 256), "
                   "2.3 s (2048 x 128), 3.2 s (7168 x 256) per process")
    for part in ("sampler", "fp8_blockscale"):
        for err in (facts.get(part) or {}).get("errors", []):
            out.append(f"{part}: vLLM's call site did not reach a FlashInfer module ({err})")
    return out


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    facts = serving.vllm.get("flashinfer")
    if facts is None:
        return FamilyCoverage(FAMILY, "not-covered", "the vLLM resolution of this plan did not report FlashInfer "
                              "facts (re-run `aotwarm plan` with this aotwarm)"), []
    if "error" in facts:
        return FamilyCoverage(FAMILY, "not-covered", f"running vLLM's FlashInfer call sites failed: {facts['error']}",
                              uncovered=["FlashInfer JIT modules are not planned for this config"]), []
    modules: dict[str, dict] = {}
    reasons: dict[str, list[str]] = {}
    sampler = facts.get("sampler") or {}
    for name, m in (sampler.get("modules") or {}).items():
        modules.setdefault(name, m)
        reasons.setdefault(name, []).append(f"vLLM's FlashInfer sampler ({sampler.get('runner')} runner): "
                                            f"{', '.join(m.get('requests', []))} requests")
    fp8 = facts.get("fp8_blockscale") or {}
    for name, m in (fp8.get("modules") or {}).items():
        modules.setdefault(name, m)
        shapes = ", ".join(f"N={n} K={k}" for n, k in m.get("shapes", []))
        reasons.setdefault(name, []).append(f"FP8 block-scale linears below M=32 ({', '.join(m.get('kernels', []))}; "
                                            f"{shapes})")
    uncovered = _uncovered(serving, target, facts)
    if sampler.get("reason"):  # vLLM refuses to start with VLLM_USE_FLASHINFER_SAMPLER=1 here
        uncovered.append(f"sampler: {sampler['reason']}")
    items, kernels = [], []
    for name in sorted(modules):
        m = modules[name]
        if not m.get("generator"):
            uncovered.append(f"module {name}: {m.get('why')} (asked for by {m.get('caller')}): not built")
            continue
        items.append(WorkItem(f"flashinfer/{name}", FAMILY, OP, {"name": name, "generator": m["generator"]},
                              "; ".join(reasons[name]), kind="flashinfer"))
        kernels.append(KernelCoverage(name, f"{m['generator'].rpartition(':')[2]}() for {target.sm_name}",
                                      reasons[name]))
    if "fp8_blockscale_gemm_90" in modules and any(i.params["name"] == "fp8_blockscale_gemm_90" for i in items):
        m_last = min(SWAPAB_BELOW - 1, serving.max_num_batched_tokens)
        shapes = sorted({(n, k) for n, k in modules["fp8_blockscale_gemm_90"].get("shapes", [])})
        for n, k in shapes:
            items.append(WorkItem(f"flashinfer/trtllm-dg/N{n}-K{k}", FAMILY, NESTED_OP,
                                  {"n": n, "k": k, "m_first": 1, "m_last": m_last},
                                  f"TRT-LLM DeepGEMM cubins fp8_blockscale_gemm_90 compiles for N={n} K={k} at "
                                  f"M 1..{m_last}", needs_gpu=True, kind="flashinfer"))
        kernels.append(KernelCoverage("TRT-LLM DeepGEMM swapAB cubins", f"{len(shapes)} shape(s), M 1..{m_last}", [
            f"N={n} K={k}: every M (config from FlashInfer's C++ heuristics over M and the SM count, "
            f"{target.num_sms} SMs); built on a GPU of the target kind" for n, k in shapes]))
    if fp8.get("modules") and facts.get("has_flashinfer"):
        uncovered.append("vLLM sends FP8 linears to FlashInfer only where its has_flashinfer() holds on the node "
                         "(flashinfer-cubin installed, or nvcc and ninja present); elsewhere vLLM runs DeepGEMM / "
                         "CUTLASS for them and fp8_blockscale_gemm_90 goes unused")
    if not items:
        return FamilyCoverage(FAMILY, "not-covered" if uncovered else "not-applicable",
                              "vLLM's call sites load no FlashInfer nvcc module for this config", uncovered=uncovered), []
    names = [i.params["name"] for i in items if i.op == OP]
    nested = [i for i in items if i.op == NESTED_OP]
    summary = (f"{len(names)} FlashInfer {facts.get('version')} nvcc module(s) vLLM loads on {target.sm_name}: "
               f"{', '.join(names)}; built without a GPU, shipped as AOT artifacts (FLASHINFER_DISABLE_JIT=1 "
               f"proves none compiles)" + (f"; {len(nested)} shape(s) of TRT-LLM DeepGEMM cubins, built on a GPU "
                                            f"of the target kind" if nested else ""))
    return FamilyCoverage(FAMILY, "planned", summary, kernels, uncovered), items


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return []  # modules are checked by loading them with FLASHINFER_DISABLE_JIT=1 (verify), not by the Triton probe
