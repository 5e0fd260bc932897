"""Key-only probing of a plan under the virtual target GPU, and the completeness audit.

Probing runs every work item through the engine's real entry points in a child process, with
Triton's compile skipped, and records which kernels, JIT keys and autotune keys each item reaches.
The audit draws random shapes from the ranges the plan claims to cover and checks that none of
them reaches a JIT key the plan does not.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Plan, WorkItem
from .planners import planner_for
from .pool import PoolOptions, Task, run_tasks


@dataclass
class AuditReport:
    samples: int
    outside: list[str] = field(default_factory=list)  # "kernel|key  (from item params)"
    failures: list[str] = field(default_factory=list)


def _run_probe(items: list[WorkItem], plan: Plan, jobs: int, on_result=None) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="aotwarm-probe-") as tmp:
        opts = PoolOptions(mode="probe", target_json=json.dumps(plan.target), jobs=jobs,
                           env={**os.environ, "TRITON_CACHE_DIR": str(Path(tmp) / "triton")},
                           log_dir=Path(tmp) / "logs", keep_going=True)

        def collect(res: dict) -> None:
            results[res["id"]] = res
            if on_result:
                on_result(res)

        run_tasks([Task(i.id, i.op, i.params) for i in items], opts, collect)
    return results


def probe_plan(plan: Plan, jobs: int = 2, on_result=None) -> Plan:
    """Fill each item's kernels/autotune keys and the plan's sorted JIT-key set."""
    from .errors import AotwarmError

    results = _run_probe(plan.triton_items, plan, jobs, on_result)
    all_keys: set[str] = set()
    autotune_keys: set[str] = set()
    for item in plan.triton_items:
        res = results.get(item.id)
        if res is None or not res["ok"]:
            err = res["error"] if res else "no result"
            raise AotwarmError(f"probing work item {item.id} failed: {err} (engine code raised under the virtual "
                               f"{plan.target['key']}; see {res.get('log') if res else 'the worker log'})")
        kernels: dict[str, list[dict]] = {}
        for rec in res.get("autotune", []):
            entry = {"key": rec["key"], "configs": len(rec["configs"])}
            if entry not in kernels.setdefault(rec["kernel"], []):
                kernels[rec["kernel"]].append(entry)
            if rec["key"]:
                autotune_keys.add(rec["kernel"] + "|" + json.dumps(rec["key"]))
        for k in res["jit_keys"]:
            kernels.setdefault(k.split("|", 1)[0], [])
        item.kernels = dict(sorted(kernels.items()))
        item.jit_keys = len(res["jit_keys"])
        all_keys.update(res["jit_keys"])
    plan.probe = {"jit_keys": sorted(all_keys), "autotune_keys": len(autotune_keys)}
    _restate(plan)
    return plan


def _restate(plan: Plan) -> None:
    """Families whose statement depends on what their items reached restate themselves (``after_probe``)."""
    from .plan import ServingArgs

    serving = ServingArgs.from_dict(plan.serving)
    for coverage in plan.families:
        planner = planner_for(coverage.family, serving.engine)
        hook = getattr(planner, "after_probe", None)
        if hook is not None:
            hook(coverage, [i for i in plan.items if i.family == coverage.family], serving)


def audit_plan(plan: Plan, samples: int, seed: int = 0, jobs: int = 2) -> AuditReport:
    """Probe ``samples`` random in-range shapes and report JIT keys the plan does not reach."""
    from .plan import ServingArgs

    serving = ServingArgs.from_dict(plan.serving)
    rng = random.Random(seed)
    items: list[WorkItem] = []
    while len(items) < samples:
        before = len(items)
        for family in serving.families:
            planner = planner_for(family, serving.engine)
            if planner is None:
                continue
            for it in planner.audit_items([i for i in plan.items if i.family == family], serving, rng):
                it.id = f"{it.id}/{len(items)}"
                items.append(it)
        if len(items) == before:  # no planner can sample this plan
            break
    items = items[:samples]
    results = _run_probe(items, plan, jobs)
    planned = set(plan.probe.get("jit_keys", []))
    report = AuditReport(samples=len(items))
    seen: set[str] = set()
    for item in items:
        res = results[item.id]
        if not res["ok"]:
            report.failures.append(f"{item.id}: {res['error']}")
            continue
        for key in res["jit_keys"]:
            if key not in planned and key not in seen:
                seen.add(key)
                report.outside.append(f"{key.split('|', 1)[0]} reached by {item.op} {json.dumps(item.params, sort_keys=True)}")
    return report
