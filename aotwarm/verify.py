"""Verify on a GPU node: preflight (can this bundle hit here?) and a replay that counts compiles.

The replay runs every work item of the bundle's plan in a child process, with real tensors on the
real GPU through the engine's own functions, and counts ``compile()`` calls that missed the disk
cache (``knobs.compilation.listener``'s ``cache_hit``).  Every other cache kind (``kinds.SIDE_KINDS``:
DeepGEMM, FlashInfer) then runs its own verify hook against the install.  Pass means zero misses and no
kind reporting a failure.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bundle import read_bundle
from .errors import Incompatible
from .install import cache_dir, engine_env, require_installed
from .kinds import SIDE_KINDS, Mismatch, merge_env
from .plan import Plan
from .pool import PoolOptions, Task, run_tasks
from .preflight import preflight

__all__ = ["Mismatch", "VerifyReport", "preflight", "verify"]


@dataclass
class VerifyReport:
    preflight: list[Mismatch]
    items: int = 0
    failed_items: list[str] = field(default_factory=list)
    hits: int = 0
    misses: list[dict] = field(default_factory=list)
    benchmarks: int = 0
    c_builds: int = 0
    unplanned_keys: list[str] = field(default_factory=list)
    bundle_entries: int = 0
    unused_entries: list[str] = field(default_factory=list)  # "kernel-name ENTRY" never loaded by the replay
    # autotune results this node had already (not from the bundle): their keys compile only the winner,
    # so the other configs' entries stay unused
    node_autotune_results: int = 0
    seconds: float = 0.0

    sections: dict = field(default_factory=dict)  # each other cache kind's verify report, by kind name

    expect_no_benchmarks: bool = False  # the bundle ships results for every planned autotune key
    expect_no_c_builds: bool = False  # the bundle ships the launchers

    @property
    def deepgemm(self) -> dict:
        return self.sections.get("deepgemm", {})

    @property
    def kind_failures(self) -> list[str]:
        """What the other cache kinds' verify hooks found wrong."""
        return [f for kind in SIDE_KINDS if kind.NAME in self.sections
                for f in kind.verify_failures(self.sections[kind.NAME])]

    @property
    def passed(self) -> bool:
        return (not self.preflight and not self.misses and not self.failed_items and not self.kind_failures
                and not (self.expect_no_benchmarks and self.benchmarks)
                and not (self.expect_no_c_builds and self.c_builds))

    def to_dict(self) -> dict:
        d = asdict(self)
        sections = d.pop("sections")
        d.update(sections)  # "deepgemm", "flashinfer": top-level keys of the JSON report
        d["kind_failures"] = self.kind_failures
        d["passed"] = self.passed
        return d


def _gpu_facts() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise Incompatible("no CUDA GPU is visible on this node: verify replays the plan on the GPU "
                           "(check CUDA_VISIBLE_DEVICES and the driver)")
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "capability": [props.major, props.minor], "num_sms": props.multi_processor_count,
            "smem_optin": getattr(props, "shared_memory_per_block_optin", None)}


def verify(bundle: Path, dest: Path, timeout: float = 1800.0, on_result=None) -> VerifyReport:
    import time

    start = time.monotonic()
    manifest = read_bundle(bundle)
    require_installed(bundle, dest)
    gpu = _gpu_facts()
    report = VerifyReport(preflight=preflight(manifest, gpu))
    if report.preflight:
        first = report.preflight[0]
        err = Incompatible(f"bundle cannot hit on this node: {first.line()}"
                           + (f" (+{len(report.preflight) - 1} more)" if len(report.preflight) > 1 else ""))
        err.report = report  # type: ignore[attr-defined]
        raise err
    plan = Plan.from_dict(manifest["plan"])
    planned = set(plan.probe.get("jit_keys", []))
    unplanned: set[str] = set()
    hit_entries: set[str] = set()

    def collect(res: dict) -> None:
        report.items += 1
        if not res["ok"]:
            report.failed_items.append(f"{res['id']}: {res['error']}")
        for c in res.get("compiles", []):
            if c["cache_hit"]:
                report.hits += 1
                hit_entries.add(c["entry"])
            else:
                report.misses.append({"item": res["id"], **c})
        report.benchmarks += len(res.get("benchmarks", []))
        report.c_builds += len(res.get("c_builds", []))
        unplanned.update(k for k in res.get("jit_keys", []) if k not in planned)
        if on_result:
            on_result(res)

    counts = manifest["autotune"]["counts"]
    shipped = {r["disk_key"] for r in manifest["autotune"]["results"] if r.get("provenance") != "node"}
    report.node_autotune_results = sum(1 for p in (Path(dest) / "triton").glob("*/*.autotune.json")
                                       if p.parent.name not in shipped)
    report.expect_no_benchmarks = counts["node"] == 0
    report.expect_no_c_builds = manifest["launchers"]["included"]
    env = merge_env(os.environ, engine_env(dest, manifest))
    if report.expect_no_c_builds:
        env["CC"] = _failing_program()  # any launcher the bundle lacks would fail loudly, not build quietly
    with _tmpdir() as logs:
        opts = PoolOptions(mode="replay", target_json=json.dumps(manifest["target"]), jobs=1, env=env,
                           log_dir=Path(logs), item_timeout=timeout, keep_going=True)
        if plan.triton_items:
            run_tasks([Task(i.id, i.op, i.params) for i in plan.triton_items], opts, collect)
    for kind in SIDE_KINDS:
        if plan.items_of(kind.NAME):
            report.sections[kind.NAME] = kind.verify_section(plan, manifest, cache_dir(dest), timeout)
    report.unplanned_keys = sorted(unplanned)
    used = {m["entry"] for m in report.misses} | hit_entries
    bundle_entries: dict[str, str] = {}
    for f in manifest["files"]:
        parts = f["path"].split("/")
        if len(parts) == 3 and parts[2].startswith("__grp__"):
            bundle_entries[parts[1]] = parts[2][len("__grp__"):-len(".json")]
    report.bundle_entries = len(bundle_entries)
    report.unused_entries = sorted(f"{name} {entry}" for entry, name in bundle_entries.items() if entry not in used)
    report.seconds = round(time.monotonic() - start, 1)
    return report


def _failing_program() -> str:
    import shutil

    return shutil.which("false") or "/bin/false"


def _tmpdir():
    import tempfile

    return tempfile.TemporaryDirectory(prefix="aotwarm-verify-")
