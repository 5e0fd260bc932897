"""Verify on a GPU node: preflight (can this bundle hit here?) and a replay that counts compiles.

The replay runs every work item of the bundle's plan in a child process, with real tensors on the
real GPU through the engine's own functions, and counts ``compile()`` calls that missed the disk
cache (``knobs.compilation.listener``'s ``cache_hit``).  Pass means zero misses.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bundle import read_bundle
from .errors import BadInput, Incompatible
from .install import engine_env, require_installed
from .plan import Plan
from .pool import PoolOptions, Task, run_tasks


@dataclass(frozen=True)
class Mismatch:
    field: str
    bundle: str
    node: str
    hint: str

    def line(self) -> str:
        return f"{self.field}: bundle has {self.bundle}, this node has {self.node} ({self.hint})"


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

    deepgemm: dict = field(default_factory=dict)  # DeepGEMM replay: new kernels, compiler calls (must be 0)

    expect_no_benchmarks: bool = False  # the bundle ships results for every planned autotune key
    expect_no_c_builds: bool = False  # the bundle ships the launchers

    @property
    def passed(self) -> bool:
        dg = self.deepgemm
        return (not self.preflight and not self.misses and not self.failed_items
                and not dg.get("new_kernels") and not dg.get("compile_attempts") and not dg.get("failed_items")
                and not (self.expect_no_benchmarks and self.benchmarks)
                and not (self.expect_no_c_builds and self.c_builds))

    def to_dict(self) -> dict:
        d = asdict(self)
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


def preflight(manifest: dict, gpu: dict | None) -> list[Mismatch]:
    """Compare what the bundle was built for with this node; every difference that makes keys differ."""
    from .engines import detect_engine
    from .envinfo import fingerprint

    target = manifest["target"]
    arch = target["capability"][0] * 10 + target["capability"][1]
    built = manifest["fingerprint"]
    node = fingerprint(arch=arch).to_dict()
    out: list[Mismatch] = []

    def cmp(name: str, a, b, hint: str) -> None:
        if a != b:
            out.append(Mismatch(name, str(a), str(b), hint))

    cmp("python_abi", built["python_abi"], node["python_abi"],
        "Triton's key hashes libtriton.so, which differs per CPython minor: build with the node's Python")
    cmp("triton_version", built["triton_version"], node["triton_version"], "build with the node's Triton wheel")
    cmp("triton_key", built["triton_key_sha256"][:16], node["triton_key_sha256"][:16],
        "a different Triton build (wheel, index or source): build with the node's exact Triton")
    cmp(f"compiler backend (sm{arch})", built["backend_hash_sha256"].get(str(arch), "?")[:16],
        node["backend_hash_sha256"].get(str(arch), "?")[:16], "ptxas differs (TRITON_PTXAS_PATH or another Triton)")
    for var in sorted(set(built["key_env"]) | set(node["key_env"])):
        cmp(f"env {var}", built["key_env"].get(var, "<unset>"), node["key_env"].get(var, "<unset>"),
            "this variable enters Triton's cache key: set it identically (unset is not the same as 0)")
    try:
        eng = detect_engine(manifest["engine"]["name"]).to_dict()
        cmp(f"engine {eng['name']} version", manifest["engine"]["version"], eng["version"],
            "install the engine version the bundle was built with")
        cmp(f"engine {eng['name']} sources", manifest["engine"]["source_sha256"][:16], eng["source_sha256"][:16],
            "kernel source text and line numbers are in the key: use the identical engine build")
    except BadInput as err:
        out.append(Mismatch(f"engine {manifest['engine']['name']}", manifest["engine"]["version"], "not installed", str(err)))
    from .install import has_deepgemm

    if has_deepgemm(manifest):
        from .deepgemm import identity_mismatches

        out.extend(identity_mismatches(manifest["deepgemm"], gpu=gpu is not None))
    if gpu is not None:
        cmp("GPU compute capability", ".".join(map(str, target["capability"])), ".".join(map(str, gpu["capability"])),
            "build for this node's arch (--gpu)")
        if manifest["plan"].get("sm_count_sensitive"):
            cmp("GPU SM count", target["num_sms"], gpu["num_sms"], "the plan depends on the SM count: --gpu/--num-sms")
        if gpu.get("smem_optin") is not None:
            cmp("GPU shared memory per block (opt-in)", target["smem_optin"], gpu["smem_optin"],
                "kernel config lists depend on it: build for this GPU's profile")
    return out


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
    env = {**os.environ, **engine_env(dest, manifest)}
    if report.expect_no_c_builds:
        env["CC"] = _failing_program()  # any launcher the bundle lacks would fail loudly, not build quietly
    with _tmpdir() as logs:
        opts = PoolOptions(mode="replay", target_json=json.dumps(manifest["target"]), jobs=1, env=env,
                           log_dir=Path(logs), item_timeout=timeout, keep_going=True)
        if plan.triton_items:
            run_tasks([Task(i.id, i.op, i.params) for i in plan.triton_items], opts, collect)
    if plan.gpu_items:
        from .deepgemm import verify_section
        from .install import deepgemm_dir

        report.deepgemm = verify_section(plan, manifest.get("deepgemm", {}), deepgemm_dir(dest), timeout)
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
