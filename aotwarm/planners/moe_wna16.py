"""WNA16 MoE family planner for vLLM 0.33 (``fused_moe_kernel_gptq_awq`` via ``TritonWNA16Experts``).

The kernel is a plain ``@triton.jit`` with no ``do_not_specialize``: a new binary for every
(block config, int class of ``EM``, int class of ``num_valid_tokens``) per GEMM.  The token count M
is swept symbolically over [1, max_num_batched_tokens] with vLLM 0.33's own rules:

* block config: ``try_get_optimal_moe_config`` — the tuned JSON
  ``E={E},N={I},device_name={GPU}[,dtype=int4_w4a16|int8_w8a16].json`` (``VLLM_TUNED_CONFIG_FOLDER``
  first, then vLLM's ``fused_moe/configs``; nearest batch-size key), else ``get_default_config``:
  ``BLOCK_SIZE_M`` = ``min(16, next_pow2(M))`` where ``should_moe_wna16_use_cuda`` holds (4-bit,
  group 32/64/128, ``M*top_k/E <= 6``), else 16 / 32 / 64 for M <= 20 / <= 40 / larger; then
  ``get_moe_wna16_block_config``: BLOCK_N/K = 32/64 for a single token, else 64/32;
* ``EM`` = the ``moe_align_block_size`` buffer (``M*top_k + E*(BM-1)``, capped at ``M*top_k*BM``
  when ``M*top_k < E``), capped again at ``rows*top_k*BM`` when the GEMM's A has fewer rows than BM;
* ``num_valid_tokens`` = ``M * top_k`` for both GEMMs (gate/up with the model's top_k, down with 1).

One representative M per distinct key; all MoE layers of a model share one signature.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target
from .intmath import int_class, next_pow2

KERNEL = "fused_moe_kernel_gptq_awq"
TRITON_METHODS = ("gptq", "moe_wna16", "compressed-tensors")


def quant_scheme(spec: ModelSpec) -> dict | None:
    """bits, group size, zero points, method — or None when the experts are not WNA16."""
    q = spec.quantization or {}
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq", "moe_wna16"):
        bits, gs = int(q.get("bits", q.get("w_bit", 0))), int(q.get("group_size", q.get("q_group_size", -1)))
        has_zp = (not q.get("sym", True)) if method == "gptq" else bool(q.get("zero_point", method == "awq"))
        return {"method": method, "bits": bits, "group_size": gs, "has_zp": has_zp, "desc_act": bool(q.get("desc_act"))}
    if method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            w = group.get("weights") or {}
            if w.get("type") == "int" and w.get("num_bits") in (4, 8) and not group.get("input_activations"):
                return {"method": method, "bits": int(w["num_bits"]), "group_size": int(w.get("group_size") or -1),
                        "has_zp": not w.get("symmetric", True), "desc_act": w.get("actorder") == "group"}
    return None


def vllm_experts_choice(serving: ServingArgs) -> list[dict] | None:
    """The experts' method and backend vLLM itself chose (``vllm_resolve``: the built MoE layers), or None
    when the plan has no vLLM resolution."""
    methods = (serving.vllm or {}).get("layer_methods")
    if methods is None:
        return None
    return [m for m in methods if "Experts" in m["layer"] or "MoE" in m["layer"]]


def backend_choice(scheme: dict, serving: ServingArgs) -> tuple[bool, str]:
    """(runs the Triton kernel?, why): vLLM's own choice for the built MoE layers when the plan was resolved
    by vLLM; otherwise the rules of vLLM 0.33 ``select_wna16_moe_backend`` (planner unit tests)."""
    experts = vllm_experts_choice(serving)
    if experts is not None:
        said = "; ".join(f"{m['method']} ({', '.join(m['chosen']) or 'no backend attribute'}) on {m['count']} layers"
                         for m in experts) or "no MoE layer"
        if any(c.endswith("=TRITON") for m in experts for c in m["chosen"]):
            return True, f"vLLM chose the Triton WNA16 experts: {said}"
        return False, (f"vLLM chose {said}: not the Triton WNA16 kernel, nothing of this family to bundle "
                       f"(vLLM's --moe-backend / --quantization change its choice; pass the same after --)")
    if scheme["method"] == "awq":
        return False, "vLLM 0.33 excludes the Triton WNA16 backend for the AutoAWQ layout (Marlin/Humming run it)"
    if scheme["desc_act"]:
        return False, "vLLM 0.33 excludes the Triton WNA16 backend for activation ordering (desc_act / actorder=group)"
    if serving.moe_backend == "triton":
        return True, "--moe-backend triton (run vLLM with the same --moe-backend triton)"
    if scheme["method"] == "moe_wna16":
        return True, ("moe_wna16 checkpoint layout: vLLM 0.33 rules out Marlin, so the Triton kernel runs "
                      "(unless FlashInfer-TRTLLM or Humming support the layer on this GPU)")
    return False, ("vLLM 0.33 picks FlashInfer-TRTLLM / Marlin / Humming (AOT CUDA, no JIT) before Triton for "
                   f"{scheme['method']} WNA16 experts; plan with --moe-backend triton if you serve with it")


def device_file_name(target: Target) -> str:
    name = target.name.replace(" ", "_")
    return "NVIDIA_H200" if "H200" in name.split("_") else name


def tuned_configs(engine: EngineInfo, e: int, n: int, dtype: str, target: Target) -> tuple[dict[int, dict] | None, str]:
    """vLLM's ``get_moe_configs``: the first tuned JSON that exists, with where it came from."""
    name = f"E={e},N={n},device_name={device_file_name(target)},dtype={dtype}.json"
    folders = ([os.environ["VLLM_TUNED_CONFIG_FOLDER"]] if os.environ.get("VLLM_TUNED_CONFIG_FOLDER") else [])
    folders.append(str(Path(engine.location) / "model_executor" / "layers" / "fused_moe" / "configs"))
    for folder in folders:
        path = Path(folder) / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise BadInput(f"tuned MoE config {path} is unreadable ({err}): fix or remove it")
            raw.pop("triton_version", None)
            return {int(k): v for k, v in raw.items()}, str(path)
    return None, f"no tuned {name}: vLLM's default buckets"


def block_config(m: int, top_k: int, e_local: int, scheme: dict, tuned: dict[int, dict] | None) -> dict:
    if tuned:
        return dict(tuned[min(tuned, key=lambda x: abs(x - m))])
    use_cuda = scheme["bits"] == 4 and scheme["group_size"] in (32, 64, 128) and m * top_k / e_local <= 6
    bm = min(16, next_pow2(m)) if use_cuda else (16 if m <= 20 else 32 if m <= 40 else 64)
    return {"BLOCK_SIZE_M": bm, "GROUP_SIZE_M": 1, "SPLIT_K": 1}


def gemm_signature(m: int, gemm: str, top_k: int, e_align: int, k: int, config: dict) -> tuple:
    rows, call_top_k = (m, top_k) if gemm == "w13" else (m * top_k, 1)
    bm = config["BLOCK_SIZE_M"]
    numel = m * top_k
    em = numel + e_align * (bm - 1)
    if numel < e_align:
        em = min(numel * bm, em)
    if rows < bm:
        em = min(em, rows * call_top_k * bm)
    nvt = rows * call_top_k
    full = dict(config)
    if not ("BLOCK_SIZE_N" in full and "BLOCK_SIZE_K" in full):
        full.update({"BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64} if nvt // call_top_k == 1 else
                    {"BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32})
    full["block_k_divisible"] = k % full["BLOCK_SIZE_K"] == 0
    return (gemm, tuple(sorted(full.items())), int_class(em), int_class(nvt))


def local_shapes(spec: ModelSpec, serving: ServingArgs) -> tuple[int, int, int]:
    """(local experts, experts that index the alignment, local intermediate size)."""
    e, inter = spec.num_experts, spec.moe_intermediate_size
    if serving.ep > 1:
        if e % serving.ep:
            raise BadInput(f"--ep {serving.ep} does not divide num_experts={e}")
        return e // serving.ep, e, inter
    if inter % serving.tp:
        raise BadInput(f"--tp {serving.tp} does not divide moe_intermediate_size={inter}")
    return e, e, inter // serving.tp


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    if not spec.num_experts:
        return FamilyCoverage("moe-wna16", "not-applicable", f"{spec.text_model_type} has no MoE layers"), []
    scheme = quant_scheme(spec)
    if scheme is None:
        return FamilyCoverage("moe-wna16", "not-applicable",
                              "experts are not weight-only int4/int8 (WNA16) quantized in this config"), []
    runs, why = backend_choice(scheme, serving)
    if not runs:
        return FamilyCoverage("moe-wna16", "not-covered", why, uncovered=[why]), []
    e_local, e_align, inter = local_shapes(spec, serving)
    top_k, hidden, gs = spec.num_experts_per_tok, spec.hidden_size, scheme["group_size"]
    dtype = serving.dtype or spec.dtype
    qdtype = "int4_w4a16" if scheme["bits"] == 4 else "int8_w8a16"
    tuned, tuned_from = tuned_configs(engine, e_local, inter, qdtype, target)
    base = {"num_experts": e_local, "align_experts": e_align, "intermediate": inter, "hidden": hidden, "top_k": top_k,
            "bits": scheme["bits"], "group_size": gs, "has_zp": scheme["has_zp"], "dtype": dtype}
    ranges: dict[tuple, list[int]] = {}  # signature -> [first M, last M] that reach it
    for m in range(1, serving.max_num_batched_tokens + 1):
        config = block_config(m, top_k, e_local, scheme, tuned)
        for gemm, k in (("w13", hidden), ("w2", inter)):
            ranges.setdefault(gemm_signature(m, gemm, top_k, e_align, k, config), [m, m])[1] = m
    items: list[WorkItem] = []
    classes: list[str] = []
    for n, (sig, (m, _)) in enumerate(sorted(ranges.items(), key=lambda kv: (kv[0][0], kv[1][0]))):
        gemm, cfg, em_cls, nvt_cls = sig
        cfg_d = dict(cfg)
        label = (f"{gemm} BM{cfg_d['BLOCK_SIZE_M']} BN{cfg_d['BLOCK_SIZE_N']} BK{cfg_d['BLOCK_SIZE_K']}"
                 + (f" w{cfg_d['num_warps']} s{cfg_d['num_stages']}" if "num_warps" in cfg_d else "")
                 + f" EM {em_cls} nvt {nvt_cls}")
        items.append(WorkItem(f"moe-wna16/{gemm}/{n:02d}", "moe-wna16", "vllm.wna16_moe_gemm",
                              {**base, "tokens": m, "gemm": gemm},
                              f"{label}: first reached at M={m} (M up to {ranges[sig][1]})"))
        classes.append(f"{label}: M {m}..{ranges[sig][1]} (first {m})")
    n_layers = spec.num_layers
    summary = (f"{n_layers} MoE layers share one signature: {e_local} local experts (of {spec.num_experts}), "
               f"top_k {top_k}, N=2x{inter} / K={hidden} (gate/up) and N={hidden} / K={inter} (down), "
               f"{qdtype} group {gs}{' with zero points' if scheme['has_zp'] else ''}, {dtype}; {why}; config: {tuned_from}")
    coverage = FamilyCoverage("moe-wna16", "planned", summary, [KernelCoverage(
        KERNEL, f"tokens M 1..{serving.max_num_batched_tokens}, both GEMMs", classes)])
    return coverage, items


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    out = []
    for gemm in ("w13", "w2"):
        base = next((i.params for i in items if i.params.get("gemm") == gemm), None)
        if base is not None:
            m = rng.choice([rng.randint(1, 64), rng.randint(1, serving.max_num_batched_tokens)])
            out.append(WorkItem(f"audit/moe-wna16/{gemm}", "moe-wna16", "vllm.wna16_moe_gemm", {**base, "tokens": m},
                                "audit sample"))
    return out
