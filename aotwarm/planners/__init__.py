"""Planners, one per kernel family: (ModelSpec, Target, ServingArgs, engine) -> coverage + work items."""

from __future__ import annotations

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSource, ModelSpec
from ..plan import FamilyCoverage, Plan, ServingArgs, WorkItem
from ..targets import ResolvedTarget
from . import gdn

FAMILIES = {"gdn": gdn.plan_family}


def make_plan(spec: ModelSpec, source: ModelSource, resolved: ResolvedTarget, serving: ServingArgs,
              engine: EngineInfo) -> Plan:
    """Run every requested family's planner; the result is not yet probed (see ``probe.probe_plan``)."""
    families: list[FamilyCoverage] = []
    items: list[WorkItem] = []
    for family in serving.families:
        if family not in FAMILIES:
            raise BadInput(f"unknown kernel family {family!r}: this aotwarm plans {', '.join(FAMILIES)}")
        coverage, family_items = FAMILIES[family](spec, resolved.target, serving, engine)
        families.append(coverage)
        items.extend(family_items)
    ids = [i.id for i in items]
    if len(ids) != len(set(ids)):
        raise AssertionError(f"planner produced duplicate work item ids: {ids}")
    model = {"source": source.__dict__, "spec": spec.to_dict()}
    return Plan(model=model, target=resolved.target.to_dict(), target_requested=resolved.requested,
                engine=engine.to_dict(), serving=serving.to_dict(), families=families, items=items)
