"""``fused-moe`` family: every Triton kernel vLLM's MoE experts launch, for every token count, as vLLM decides.

Nothing here re-derives a vLLM rule.  The resolution child (``engines.vllm_resolve`` + ``vllm_moe``)
built each MoE layer kind with vLLM's oracle (backend, experts class, refined FP8 blocks, expert map),
ran vLLM's ``process_weights_after_loading`` to get the modular kernel the serving runner calls, and
called that kernel's ``apply`` key-only for every M in 1..max_num_batched_tokens: which tuned config
(by device name, E, N, dtype, block shape), naive or aligned block assignment, ``EM`` /
``num_valid_tokens`` classes, SWAP_AB, activation-quant kernels -- whatever vLLM does for M, the keys it
reaches are what was recorded.  This planner turns the recorded M groups into work items: the fewest
token counts whose keys cover every key of the sweep, each built by the same call
(``vllm.fused_moe_experts``).

Layer kinds whose kernel vLLM does not build as a modular kernel, or whose experts launch no Triton
kernel (CUTLASS, FlashInfer, Marlin, DeepGEMM run AOT code or another JIT), are stated with the class.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target

FAMILY = "fused-moe"
OP = "vllm.fused_moe_experts"
# experts classes aotwarm cannot sweep GPU-less, by what they run (the class name is vLLM's choice)
OTHER_EXPERTS = (("TrtLlm", "FlashInfer's TRT-LLM MoE: a FlashInfer CUDA module JIT-built on first use and TRT-LLM "
                            "cubins FlashInfer loads at run time (not built by this aotwarm)"),
                 ("FlashInfer", "FlashInfer's MoE: FlashInfer CUDA modules, JIT-built on first use (not built by "
                                "this aotwarm)"),
                 ("Humming", "Humming kernels: JIT-compiled with NVRTC on first use (not built by this aotwarm)"),
                 ("Marlin", "Marlin: CUDA kernels precompiled in vLLM's wheel (no JIT)"),
                 ("Cutlass", "CUTLASS: CUDA kernels precompiled in vLLM's wheel (no JIT)"))


def _short(qualified: str) -> str:
    return qualified.rpartition(":")[2]


def cover(groups: list[dict]) -> list[dict]:
    """The fewest groups (greedy set cover) whose keys together are every key the sweep reached."""
    remaining = set().union(*(set(g["keys"]) for g in groups)) if groups else set()
    chosen: list[dict] = []
    while remaining:
        best = max(groups, key=lambda g: (len(remaining & set(g["keys"])), -g["first"]))
        gained = remaining & set(best["keys"])
        if not gained:
            break
        chosen.append(best)
        remaining -= gained
    return sorted(chosen, key=lambda g: g["first"])


def is_mxfp4(kind: dict) -> bool:
    """MXFP4 experts (vLLM's ``*Mxfp4MoEMethod``, e.g. gpt-oss): the ``mxfp4-moe`` family plans them."""
    return "Mxfp4" in kind.get("method", "")


def has_lora(kind: dict) -> bool:
    """Experts running with vLLM's LoRA context (``--enable-lora``): the ``moe-lora`` family plans them."""
    return "lora" in kind or "lora_unbuilt" in kind


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    kinds = recorded_kinds(FAMILY, spec, serving)
    if isinstance(kinds, FamilyCoverage):
        return kinds, []
    mine = [k for k in kinds if not is_mxfp4(k) and not has_lora(k)]
    if not mine:
        return FamilyCoverage(FAMILY, "not-applicable", "every MoE layer kind holds MXFP4 experts or runs with "
                                                        "vLLM's LoRA context: the mxfp4-moe / moe-lora families "
                                                        "plan them"), []
    return plan_kinds(FAMILY, mine, target)


def recorded_kinds(family: str, spec: ModelSpec, serving: ServingArgs) -> list[dict] | FamilyCoverage:
    """The MoE layer kinds the resolution recorded, or the coverage saying why there are none."""
    kinds = (serving.vllm or {}).get("moe")
    if kinds is None:
        if not spec.num_experts:
            return FamilyCoverage(family, "not-applicable", f"{spec.text_model_type} has no MoE layers")
        why = ("the MoE kernels are planned from vLLM's own kernel objects: plan with vLLM 0.33 installed "
               "(--engine vllm), so aotwarm can ask vLLM which experts run")
        return FamilyCoverage(family, "not-covered", why, uncovered=[why])
    if not kinds:
        return FamilyCoverage(family, "not-applicable", "vLLM built no MoE layer for this model")
    return kinds


def plan_kinds(family: str, kinds: list[dict], target: Target, notes: tuple[str, ...] = ()
               ) -> tuple[FamilyCoverage, list[WorkItem]]:
    """Work items for the recorded MoE layer kinds: the fewest token counts whose keys cover the sweep."""
    items: list[WorkItem] = []
    kernels: list[KernelCoverage] = []
    said: list[str] = []
    uncovered: list[str] = []
    for n, kind in enumerate(kinds):
        who = (f"{kind['layers']} x {kind['layer'].rsplit('.', 2)[-2] if '.' in kind['layer'] else kind['layer']} "
               f"({kind['method']}, {kind['backend']}, {_short(kind.get('experts', '?'))})")
        if "lora_unbuilt" in kind:
            reason = (f"{who}: not covered: vLLM's fused MoE-LoRA Triton kernels for these experts "
                      f"({kind['lora_unbuilt']}) compile on the node")
            uncovered.append(reason)
            said.append(reason)
        if "unbuilt" in kind or "unswept" in kind:
            experts = _short(kind.get("experts", "?"))
            runs = next((what for part, what in OTHER_EXPERTS if part in experts),
                        f"{experts}, which aotwarm cannot drive GPU-less")
            reason = (f"{who}: not covered: vLLM runs {runs} ({kind.get('unbuilt') or kind.get('unswept')}); "
                      f"`--moe-backend triton` asks vLLM for its Triton experts (planned here) where vLLM supports "
                      f"them for this checkpoint")
            uncovered.append(reason)
            said.append(reason)
            continue
        groups = kind["sweep"]
        if not any(g["keys"] for g in groups):
            experts = _short(kind.get("experts", "?"))
            runs = next((what for part, what in OTHER_EXPERTS if part in experts), "no Triton kernel")
            said.append(f"{who}: vLLM's kernel swept over M 1..{kind['max_tokens']} launched no Triton kernel "
                        f"on {target.name}: it runs {runs}")
            continue
        chosen = cover(groups)
        body = {k: v for k, v in kind.items() if k not in ("sweep",)}
        for i, g in enumerate(chosen):
            items.append(WorkItem(f"{family}/{n}/{i:02d}", family, OP, {"moe": body, "tokens": g["first"]},
                                  f"M={g['first']} reaches {len(g['keys'])} key(s) (also M up to {g['last']}, "
                                  f"{g['count']} token counts in all)"))
        names = sorted({k for g in groups for k in g["kernels"]})
        keys = len(set().union(*(set(g["keys"]) for g in groups)))
        classes = [f"M {g['first']}..{g['last']} ({g['count']} counts): {len(g['keys'])} keys" for g in groups]
        kernels.extend(KernelCoverage(name, f"{who}: M 1..{kind['max_tokens']}", classes) for name in names)
        said.append(f"{who}: {keys} JIT keys over M 1..{kind['max_tokens']}, {len(groups)} key sets, "
                    f"{len(chosen)} token counts build them all")
        if not kind["kernel"].get("monolithic"):
            said.append("routing not swept: vLLM's CUDA routers run its compiled top-k ops (topk_softmax / "
                        "topk_sigmoid / grouped_topk); grouped_topk falls back to a torch.compile'd function for "
                        "shapes its op refuses (an Inductor JIT, not in this bundle)")
    if items:
        said.extend(notes)
    status = "planned" if items else ("not-covered" if uncovered else "not-applicable")
    return FamilyCoverage(family, status, "; ".join(said), kernels, uncovered=uncovered), items


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    """Random token counts through the same vLLM kernel, per layer kind."""
    out = []
    seen: set[str] = set()
    for item in items:
        layer = item.params["moe"]["layer"]
        if layer in seen:
            continue
        seen.add(layer)
        m = rng.choice([rng.randint(1, 64), rng.randint(1, item.params["moe"]["max_tokens"])])
        out.append(WorkItem(f"audit/{item.family}/{len(out)}", item.family, OP, {**item.params, "tokens": m},
                            "audit sample"))
    return out
