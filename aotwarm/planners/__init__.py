"""Planners, one per kernel family: (ModelSpec, Target, ServingArgs, engine) -> coverage + work items."""

from __future__ import annotations

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSource, ModelSpec
from ..plan import FamilyCoverage, Plan, ServingArgs, WorkItem
from ..targets import ResolvedTarget
from . import (deepgemm, engine_layers, flashinfer, fused_moe, gdn, gdn_vllm, moe_lora, moe_wna16, mxfp4_moe,
               shared_expert_gate, vllm_runtime)

# (family, engine) -> planner module with plan_family() and audit_items()
PLANNERS = {("gdn", "fla"): gdn, ("gdn", "vllm"): gdn_vllm, ("moe-wna16", "vllm"): moe_wna16,
            ("shared-expert-gate", "vllm"): shared_expert_gate, ("deepgemm", "vllm"): deepgemm,
            ("fused-moe", "vllm"): fused_moe, ("engine-layers", "vllm"): engine_layers,
            ("flashinfer", "vllm"): flashinfer, ("mxfp4-moe", "vllm"): mxfp4_moe,
            ("moe-lora", "vllm"): moe_lora, ("vllm-runtime", "vllm"): vllm_runtime}
FAMILIES = sorted({family for family, _ in PLANNERS})


def families_for(requested: tuple[str, ...], engine: str) -> tuple[str, ...]:
    """``all`` means every family this aotwarm plans for ``engine``."""
    if "all" in requested:
        return tuple(f for f in FAMILIES if (f, engine) in PLANNERS)
    return tuple(requested)


def planner_for(family: str, engine: str):
    """The planner module for ``family`` under ``engine``, or None when this aotwarm has none."""
    return PLANNERS.get((family, engine))


def make_plan(spec: ModelSpec, source: ModelSource, resolved: ResolvedTarget, serving: ServingArgs,
              engine: EngineInfo) -> Plan:
    """Run every requested family's planner; the result is not yet probed (see ``probe.probe_plan``)."""
    families: list[FamilyCoverage] = []
    items: list[WorkItem] = []
    for family in serving.families:
        if family not in FAMILIES:
            raise BadInput(f"unknown kernel family {family!r}: this aotwarm plans {', '.join(FAMILIES)}")
        planner = planner_for(family, engine.name)
        if planner is None:
            families.append(FamilyCoverage(family, "not-covered", f"no {family} planner for engine {engine.name}"))
            continue
        coverage, family_items = planner.plan_family(spec, resolved.target, serving, engine)
        families.append(coverage)
        items.extend(family_items)
    ids = [i.id for i in items]
    if len(ids) != len(set(ids)):
        raise AssertionError(f"planner produced duplicate work item ids: {ids}")
    model = {"source": source.__dict__, "spec": spec.to_dict()}
    return Plan(model=model, target=resolved.target.to_dict(), target_requested=resolved.requested,
                engine=engine.to_dict(), serving=serving.to_dict(), families=families, items=items)
