"""DeepGEMM family planner for vLLM 0.33: every FP8 128x128 block GEMM shape vLLM sends to DeepGEMM.

DeepGEMM (vendored by vLLM 0.33 as ``vllm.third_party.deep_gemm`` 2.8.1) JIT-compiles one kernel
per generated source: N and K (and the number of expert groups) are template arguments, M is a
runtime argument but chooses the block layout, so each (kind, N, K, groups) shape has a handful of
kernels spread over M.  Its heuristics are C++ and read the GPU; the kernels are therefore built on
a GPU of the target kind by visiting every M the engine can produce (``deepgemm_run``).  The plan
lists the shapes and their M ranges and marks them "needs a GPU of the target kind".

Which GEMMs reach DeepGEMM under vLLM 0.33 (``_POSSIBLE_FP8_BLOCK_KERNELS``, ``select_fp8_moe_backend``):

* dense linears of a ``quant_method: fp8`` model with ``weight_block_size [128, 128]`` on sm90 /
  sm100 / sm120 (``support_deep_gemm``), bf16 activations, N % 64 == 0 and K % 128 == 0
  (``should_use_deepgemm_for_fp8_linear``), not ``modules_to_not_convert``; Qwen3.5 text models are
  excluded on Blackwell (``_DEEPGEMM_BLACKWELL_EXCLUDED_MODEL_TYPES``).  On sm90, when the installed
  FlashInfer has ``fp8_blockscale_gemm_sm90`` (vLLM's pinned FlashInfer does), M < 32 runs
  FlashInfer's block-scale GEMM and M >= 32 DeepGEMM; the plan covers DeepGEMM for every M (so it
  also holds with ``VLLM_BLOCKSCALE_FP8_GEMM_FLASHINFER=0``) and states the FlashInfer part;
* FP8 block MoE experts only with the DeepGEMM MoE backend (``--moe-backend deep_gemm``, i.e.
  ``VLLM_MOE_USE_DEEP_GEMM=1`` or ``moe_backend="deep_gemm"``): on sm90 vLLM's default is its Triton
  ``fused_moe_kernel`` for TP and FlashInfer CUTLASS for EP; on Blackwell FlashInfer first.  Grouped
  contiguous layout: M_sum = ``compute_aligned_M_and_alignment`` (multiples of the alignment, 128 on
  sm90) up to its value at ``max_num_batched_tokens``; w13 (N = 2·I, K = hidden) and w2 (N = hidden,
  K = I) per local expert group.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target
from .moe_wna16 import local_shapes

FAMILY = "deepgemm"
DENSE_TYPES = {"qwen2", "qwen3", "llama", "mistral", "qwen2_moe", "qwen3_moe"}
BLACKWELL_EXCLUDED = {"qwen3_5_text": (10, 12), "qwen3_5_moe_text": (10, 12)}
FLASHINFER_BELOW = 32  # vLLM 0.33 FlashInferFp8DeepGEMMDynamicBlockScaledKernel: M < 32 -> FlashInfer on sm90
GPU_NOTE = "needs a GPU of the target kind to compile (DeepGEMM's JIT reads the device and runs nvcc)"


def fp8_block_shape(spec: ModelSpec) -> list | None:
    q = spec.quantization or {}
    if str(q.get("quant_method", "")).lower() != "fp8":
        return None
    return q.get("weight_block_size")


def _not_converted(spec: ModelSpec, proj: str) -> bool:
    """A projection left in bf16 in every layer (``modules_to_not_convert`` / ``ignored_layers``)."""
    skip = [str(m) for m in (spec.quantization.get("modules_to_not_convert") or [])
            + (spec.quantization.get("ignored_layers") or [])]
    hits = [m for m in skip if m.endswith(proj) or f".{proj}." in m + "."]
    return len(hits) >= max(1, spec.num_layers) or proj in skip


def _split(what: str, n: int, tp: int) -> int:
    if n % tp:
        raise BadInput(f"--tp {tp} does not divide {what}={n}: pick a tensor-parallel size that divides it")
    return n // tp


def dense_shapes(spec: ModelSpec, tp: int) -> list[tuple[str, int, int, dict[str, list[int]]]]:
    """(projection, N, K, checkpoint kinds with their global [out, in] shapes) per rank for the linears vLLM
    quantizes in FP8 blocks (fused projections list every checkpoint tensor they are made of)."""
    att, hidden = spec.attention, spec.hidden_size
    out: list[tuple[str, int, int, dict[str, list[int]]]] = []
    if att is not None:
        q = _split("num_attention_heads", att.num_heads, tp) * att.head_dim
        kv = max(1, att.num_kv_heads // tp) * att.head_dim  # vLLM replicates KV heads when tp > num_kv_heads
        qg, kvg = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
        out += [("qkv_proj", q + 2 * kv, hidden, {"self_attn.q_proj": [qg, hidden], "self_attn.k_proj": [kvg, hidden],
                                                  "self_attn.v_proj": [kvg, hidden]}),
                ("o_proj", hidden, q, {"self_attn.o_proj": [hidden, qg]})]
    has_dense_mlp = not spec.num_experts or spec.mlp_only_layers or spec.decoder_sparse_step > 1
    for prefix, label, width, what in (
            ("mlp", "", spec.intermediate_size if has_dense_mlp else None, "intermediate_size"),
            ("mlp.shared_expert", "shared_expert.", spec.shared_expert_intermediate_size,
             "shared_expert_intermediate_size")):
        if width:
            inter = _split(what, int(width), tp)
            out += [(f"{label}gate_up_proj", 2 * inter, hidden, {f"{prefix}.gate_proj": [int(width), hidden],
                                                                f"{prefix}.up_proj": [int(width), hidden]}),
                    (f"{label}down_proj", hidden, inter, {f"{prefix}.down_proj": [hidden, int(width)]})]
    return [row for row in out if not _not_converted(spec, row[0].split(".")[-1])]


def checkpoint_verdict(spec: ModelSpec, name: str, parts: dict[str, list[int]]) -> tuple[bool, str | None]:
    """(is FP8 in the checkpoint, note) from safetensors headers; (True, None) when none were read.

    Raises BadInput when the checkpoint's shape disagrees with the config (the plan would be wrong)."""
    table = (spec.weights or {}).get("projections") or {}
    if not table:
        return True, None
    fp8_layers: set[int] | None = None
    for kind, want in parts.items():
        got = table.get(kind)
        if got is None:
            return False, f"{name}: no {kind} weights in the checkpoint ({spec.weights['source']}): not planned"
        if [list(s) for s in got["shapes"]] != [want]:
            raise BadInput(f"checkpoint {kind} has shape {got['shapes']}, the config implies {want}: the config and "
                           f"the weights disagree ({spec.weights['source']})")
        layers = set(got["layers_by_dtype"].get("F8_E4M3", []))
        fp8_layers = layers if fp8_layers is None else fp8_layers & layers
    if not fp8_layers:
        return False, f"{name}: stored unquantized in the checkpoint ({spec.weights['source']}): not DeepGEMM"
    total = max(table[k]["layers"] for k in parts)
    if len(fp8_layers) < total:
        return True, f"{name}: FP8 in {len(fp8_layers)} of {total} layers per the checkpoint; the others are not DeepGEMM"
    return True, None


def grouped_m_bound(max_tokens: int, top_k: int, local_experts: int, align: int = 128) -> int:
    """vLLM 0.33 ``compute_aligned_M_and_alignment`` at M = max_tokens (sm90: alignment stays 128)."""
    routed = max_tokens * top_k
    m_sum = routed + min(routed, local_experts) * (align - 1)
    return -(-m_sum // align) * align


def _moe_choice(target: Target, serving: ServingArgs) -> tuple[bool, str]:
    """Whether the FP8 MoE experts run DeepGEMM: vLLM's own experts class when the plan was resolved by
    vLLM (``vllm_moe``), else the requested backend."""
    kinds = (serving.vllm or {}).get("moe")
    if kinds is not None:
        chosen = sorted({k.get("experts", "?").rpartition(":")[2] for k in kinds})
        if any("DeepGemm" in c for c in chosen):
            return True, f"vLLM chose {', '.join(chosen)} for the MoE experts"
        return False, (f"FP8 block MoE experts: vLLM chose {', '.join(chosen) or 'no experts class'} (not DeepGEMM; "
                       "the fused-moe family plans what it launches) -- --moe-backend deep_gemm makes vLLM use DeepGEMM")
    if serving.moe_backend == "deep_gemm":
        return True, "DeepGEMM MoE backend requested (--moe-backend deep_gemm)"
    return False, ("FP8 block MoE experts: which kernel runs them is vLLM's choice; plan with vLLM installed to "
                   "learn it (--moe-backend deep_gemm plans DeepGEMM)")


def vllm_linear_shapes(linears: list[dict]) -> tuple[dict[tuple[int, int], list[str]], list[str]]:
    """(N, K) -> layer names of the FP8 linears vLLM itself sends to DeepGEMM (``vllm_resolve._fp8_linears``:
    the method's ``use_deep_gemm`` and the per-call shape check of vLLM's DeepGEMM kernel), and what it does not."""
    names: dict[tuple[int, int], list[str]] = {}
    said: list[str] = []
    for kind in linears:
        where = f"{kind['layer']} ({kind['count']} layers, N={kind['n']} K={kind['k']})"
        if kind["deepgemm"]:
            names.setdefault((kind["n"], kind["k"]), []).append(f"{kind['layer']} x{kind['count']}")
        elif kind["use_deep_gemm"]:
            said.append(f"{where}: vLLM's DeepGEMM kernel refuses this shape on every call (N % 64, K % 128 or "
                        f"output dtype {kind['out_dtype']}); its fallback {', '.join(kind['kernel'])} runs it")
        else:
            said.append(f"{where}: vLLM runs it with {', '.join(kind['kernel']) or 'its FP8 method'}, not DeepGEMM")
    return names, said


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    block = fp8_block_shape(spec)
    if block is None:
        return FamilyCoverage(FAMILY, "not-applicable", "no FP8 block-quantized weights in this config"), []
    major = target.capability[0]
    if list(block) != [128, 128] or not (target.capability == (9, 0) or major in (10, 12)):
        return FamilyCoverage(FAMILY, "not-applicable",
                              f"FP8 weight blocks {block} on {target.sm_name}: vLLM 0.33 does not use DeepGEMM here "
                              "(CUTLASS / Triton / Marlin FP8 paths)"), []
    if major in BLACKWELL_EXCLUDED.get(spec.text_model_type, ()):
        return FamilyCoverage(FAMILY, "not-applicable", f"vLLM 0.33 disables DeepGEMM for {spec.text_model_type} on "
                              "Blackwell (_DEEPGEMM_BLACKWELL_EXCLUDED_MODEL_TYPES)"), []
    dtype = serving.dtype or spec.dtype
    if dtype != "bfloat16":
        return FamilyCoverage(FAMILY, "not-applicable", f"activations are {dtype}: vLLM 0.33 runs DeepGEMM only with "
                              "bf16 output (should_use_deepgemm_for_fp8_linear)"), []
    linears = (serving.vllm or {}).get("fp8_linears")
    if linears is None and spec.text_model_type not in DENSE_TYPES:
        why = (f"FP8 linears of {spec.text_model_type}: plan with vLLM 0.33 installed (--engine vllm) so vLLM's own "
               "layers say which GEMMs go to DeepGEMM; without it only dense Qwen/Llama layouts are known")
        return FamilyCoverage(FAMILY, "not-covered", why, uncovered=[why]), []
    max_m = serving.max_num_batched_tokens
    items: list[WorkItem] = []
    kernels: list[KernelCoverage] = []
    uncovered: list[str] = []
    names: dict[tuple[int, int], list[str]] = {}  # layers with one (N, K) share its kernels
    headers = bool((spec.weights or {}).get("projections")) and spec.text_model_type in DENSE_TYPES
    vllm_names: dict[tuple[int, int], list[str]] = {}
    if linears is not None:
        vllm_names, said = vllm_linear_shapes(linears)
        if not headers:  # vLLM's layers decide; with checkpoint headers the checked config rule runs (below)
            names, uncovered = vllm_names, said
    for name, n, k, parts in (dense_shapes(spec, serving.tp) if linears is None or headers else ()):
        fp8, note = checkpoint_verdict(spec, name, parts)
        if note:
            uncovered.append(note)
        if not fp8:
            continue
        if n % 64 or k % 128:
            uncovered.append(f"{name} N={n} K={k}: not DeepGEMM in vLLM 0.33 (needs N%64==0, K%128==0; CUTLASS runs it)")
            continue
        names.setdefault((n, k), []).append(name)
    if headers and linears is not None and set(vllm_names) != set(names):
        uncovered.append(f"the layers vLLM built send {sorted(vllm_names)} to DeepGEMM; the checkpoint headers "
                         f"confirm {sorted(names)}: the checkpoint-confirmed shapes are planned")
    for (n, k), layer_names in names.items():
        items.append(WorkItem(f"deepgemm/fp8_gemm_nt/N{n}-K{k}", FAMILY, "vllm.deepgemm_fp8_gemm_nt",
                              {"n": n, "k": k, "m_first": 1, "m_last": max_m, "m_step": 1}, ", ".join(layer_names),
                              needs_gpu=True))
    if items and serving.deep_gemm_e8m0:
        uncovered.append("load-time UE8M0 requantization of the FP8 weights (vLLM's per_block_cast_to_fp8, a "
                         "torch.compile(dynamic=True) function): an Inductor kernel compiled on each fresh node "
                         "(seen by `aotwarm record` on the H200), not in this bundle -- Inductor's own cache "
                         "(TORCHINDUCTOR_CACHE_DIR) holds it")
    if target.capability == (9, 0) and items:
        uncovered.append(f"dense FP8 linears at M < {FLASHINFER_BELOW} run FlashInfer's block-scale FP8 GEMM when the "
                         "installed FlashInfer provides fp8_blockscale_gemm_sm90 (VLLM_BLOCKSCALE_FP8_GEMM_FLASHINFER=1, "
                         "vLLM's default): FlashInfer JIT, not in this bundle (DeepGEMM is planned for those M too)")
    if spec.num_experts:
        runs, why = _moe_choice(target, serving)
        if not runs:
            uncovered.append(why)
        else:
            e_local, _, inter = local_shapes(spec, serving)
            full_inter, hidden = int(spec.moe_intermediate_size), spec.hidden_size
            fp8, note = checkpoint_verdict(spec, "MoE experts", {
                "mlp.experts.*.gate_proj": [full_inter, hidden], "mlp.experts.*.up_proj": [full_inter, hidden],
                "mlp.experts.*.down_proj": [hidden, full_inter]})
            if note:
                uncovered.append(note)
            bound = grouped_m_bound(max_m, int(spec.num_experts_per_tok), e_local)
            for gemm, n, k in (("w13", 2 * inter, hidden), ("w2", hidden, inter)) if fp8 else ():
                if n % 128 or k % 128:
                    uncovered.append(f"MoE {gemm} N={n} K={k}: not a multiple of the 128x128 block")
                    continue
                items.append(WorkItem(f"deepgemm/m_grouped_contiguous/{gemm}-E{e_local}-N{n}-K{k}", FAMILY,
                                      "vllm.deepgemm_m_grouped_fp8_gemm_nt_contiguous",
                                      {"n": n, "k": k, "groups": e_local, "top_k": int(spec.num_experts_per_tok),
                                       "m_first": 128, "m_last": bound, "m_step": 128,
                                       "warmup_n": max(2 * inter, hidden)},  # vLLM's relax warmup N for both
                                      f"MoE {gemm} ({e_local} local experts)", needs_gpu=True))
            if fp8:
                uncovered.append("MoE masked layout (m_grouped_fp8_gemm_nt_masked: batched experts with DeepEP "
                                 "low-latency / data-parallel all-to-all) is not planned; the contiguous layout is")
                if major in (10, 12):
                    uncovered.append("MoE on Blackwell: vLLM shrinks the contiguous-layout alignment per call "
                                     "(get_theoretical_mk_alignment_for_contiguous_layout); only alignment 128 is swept")
    for item in items:
        p = item.params
        kernels.append(KernelCoverage(item.op.split(".", 1)[1], f"N={p['n']} K={p['k']}"
                                      + (f" groups={p['groups']}" if "groups" in p else ""),
                                      [f"{item.reason}: M {p['m_first']}..{p['m_last']} step {p['m_step']} "
                                       f"({(p['m_last'] - p['m_first']) // p['m_step'] + 1} values); {GPU_NOTE}"]))
    if not items:
        return FamilyCoverage(FAMILY, "not-covered" if uncovered else "not-applicable",
                              "no GEMM of this model reaches DeepGEMM in vLLM 0.33", uncovered=uncovered), []
    if linears is not None and not headers:
        loaded = (serving.vllm or {}).get("checkpoint") or {}
        shapes_from = "linears and per-rank shapes from the layers vLLM built" + (
            f", checked by vLLM's weight loaders against {loaded['source']} ({loaded['tensors']} tensors)"
            if loaded.get("tensors") else f" ({loaded.get('source') or 'no checkpoint headers read'})")
    else:
        shapes_from = (f"shapes checked against {spec.weights['source']}" if (spec.weights or {}).get("projections")
                       else (spec.weights or {}).get("source", "shapes from config.json (no checkpoint headers read)"))
    summary = (f"{len(items)} DeepGEMM shape(s) on {target.sm_name} ({target.num_sms} SMs), every M the engine can "
               f"produce up to {max_m} tokens, UE8M0 scales {'on' if serving.deep_gemm_e8m0 else 'off'} "
               f"(VLLM_USE_DEEP_GEMM_E8M0); {shapes_from}; {GPU_NOTE}")
    return FamilyCoverage(FAMILY, "planned", summary, kernels, uncovered), items


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return []  # DeepGEMM shapes are checked on the GPU by `aotwarm verify`, not by the Triton probe
