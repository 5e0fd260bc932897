"""DeepGEMM as a cache kind: build it on a GPU of the target kind, check identity, verify zero compiles.

A plan's DeepGEMM items (``WorkItem.needs_gpu``) run in ``pool.py`` workers
(``aotwarm.deepgemm_worker``: crash-isolated, per-item time limit, a log each) with
``DG_JIT_CACHE_DIR`` pointing at one cache for the plan; workers run side by side (distinct
(N, K, groups) never share a kernel).  A worker visits every M of its item through vLLM's wrappers and
reports the cache entries it compiled.

DeepGEMM's cache entry is ``cache/<kernel>.<hash>/{kernel.cu, kernel.cubin, meta.json}``; the hash
covers the generated source (N, K, groups, block layout, the SM count) and the compiler identity.
Measured on the H100 (docs/benchmarks.md): moving the DeepGEMM library to another path keeps every
hit, a different SM count (``set_num_sms``) compiles new kernels, and DeepGEMM runs
``nvcc --version`` even when every kernel is cached.  The manifest therefore records the library
version and header digest, the nvcc release, the arch and the SM count, and install / verify refuse a
node where any of them differ.

Installed under the generation (``DIR/triton/.deep_gemm``, the engine's ``DG_JIT_CACHE_DIR``): entries are
keyed by content, so they are written as shipped.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..plan import Plan, WorkItem
from .base import AddedBundle, BuildContext, InstallContext, Mismatch, target_gpu_problem, write_fresh

LABEL = "DeepGEMM kernels"  # how output names this kind's files
NAME = "deepgemm"
PREFIX = "deep_gemm/"
INSTALL_SUBDIR = ".deep_gemm"  # inside the installed Triton generation: one atomic publish for both caches
# DeepGEMM JIT cache entries: deep_gemm/cache/<kernel>.<32 hex>/<file>
_MEMBER = re.compile(r"^deep_gemm/cache/[A-Za-z0-9_]{1,128}\.[0-9a-f]{32}/(kernel\.cu|kernel\.cubin|meta\.json|\.committed)$")


def member_ok(name: str) -> bool:
    return bool(_MEMBER.match(name))


def shipped(manifest: dict | None) -> bool:
    return bool(manifest) and (manifest.get(NAME) or {}).get("status") == "built"


def install_member(ctx: InstallContext, name: str, data: bytes) -> None:
    write_fresh(ctx.generation / INSTALL_SUBDIR / name[len(PREFIX):], data)
    ctx.files += 1


def install_finish(ctx: InstallContext) -> None:
    return None


def engine_env(cache_dir: Path, manifest: dict) -> dict[str, str]:
    return {"DG_JIT_CACHE_DIR": str(cache_dir / INSTALL_SUBDIR)} if shipped(manifest) else {}


def mismatches(manifest: dict, gpu: dict | None) -> list[Mismatch]:
    return identity_mismatches(manifest[NAME], gpu=gpu is not None) if shipped(manifest) else []


def verify_failures(report: dict) -> list[str]:
    out = []
    if report.get("new_kernels"):
        out.append(f"DeepGEMM compiled {report['new_kernels']} kernel(s) the bundle lacks")
    if report.get("compile_attempts"):
        out.append(f"DeepGEMM ran nvcc {report['compile_attempts']} time(s)")
    out.extend(f"DeepGEMM item {f}" for f in report.get("failed_items", []))
    return out


@dataclass
class GpuItemOutcome:
    id: str
    ok: bool
    error: str | None = None
    m_visited: int = 0
    new_entries: list[str] = field(default_factory=list)  # kernels this item compiled
    seconds: float = 0.0
    warmup_calls: dict = field(default_factory=dict)


def entries(cache_dir: Path) -> set[str]:
    root = Path(cache_dir) / "cache"
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def gpu_problem(plan: Plan) -> str | None:
    """Why the DeepGEMM items cannot be built here (None: a GPU of the target kind is visible; DeepGEMM can
    be told to use fewer SMs than it has, so more is fine)."""
    return target_gpu_problem(plan.target, exact_sms=False)


def run_items(items: list[WorkItem], mode: str, cache_dir: Path, log_dir: Path, jobs: int, settings: dict,
              e8m0: bool, extra_env: dict[str, str] | None = None, timeout: float = 1800.0) -> list[GpuItemOutcome]:
    """Run the items' sweeps in ``pool.py`` workers (``aotwarm.deepgemm_worker``) against ``cache_dir``."""
    from ..pool import PoolOptions, Task, run_tasks

    cache_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DG_JIT_CACHE_DIR": str(cache_dir), **(extra_env or {}),
           # the serving setting, not whatever the builder's environment says
           "VLLM_USE_DEEP_GEMM_E8M0": "1" if e8m0 else "0"}
    results: dict[str, dict] = {}
    opts = PoolOptions(mode=mode, target_json=json.dumps(settings), jobs=jobs, env=env, log_dir=log_dir,
                       item_timeout=timeout, worker_module="aotwarm.deepgemm_worker")
    run_tasks([Task(i.id, i.op, i.params) for i in items], opts, lambda res: results.__setitem__(res["id"], res))
    return [GpuItemOutcome(i.id, bool(r.get("ok")), r.get("error"), r.get("m_visited", 0), r.get("new_entries", []),
                           r.get("seconds", 0.0), r.get("warmup_calls", {}))
            for i in items for r in [results.get(i.id, {"error": "not run"})]]


def build_section(ctx: BuildContext) -> tuple[dict, dict[str, bytes]]:
    """Build the plan's DeepGEMM items here, or take them from ``--add`` (a bundle built on a GPU node),
    or record why not; returns (manifest section, bundle files)."""
    plan, jobs, timeout, add_from = ctx.plan, ctx.jobs, ctx.timeout, ctx.add_from.get(NAME)
    cache_dir, log_dir = ctx.work_dir / "deep_gemm", ctx.work_dir / "logs" / "deepgemm"
    items = plan.items_of(NAME)
    if not items:
        return {"status": "none", "items": []}, {}
    if add_from is not None:
        return section_from_bundle(plan, add_from)
    problem = gpu_problem(plan)
    if problem is not None:
        return {"status": "not-built", "reason": f"{problem}: DeepGEMM compiles on a GPU of the target kind "
                f"({plan.target['name']}); build there, or --add a bundle built there",
                "items": [{"id": i.id, "built": False} for i in items]}, {}
    from ..engines.vllm_deepgemm import library_identity

    settings = {"num_sms": plan.target["num_sms"], "max_tokens": plan.serving["max_num_batched_tokens"],
                "count_warmup": True}
    outcomes = run_items(items, "build", cache_dir, log_dir, jobs, settings, plan.serving.get("deep_gemm_e8m0", True),
                         timeout=timeout)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return {"status": "failed", "reason": f"{failed[0].id}: {failed[0].error}",
                "items": [asdict(o) for o in outcomes]}, {}
    identity = {**library_identity(), **_device_identity(cache_dir)}
    library_root = identity.pop("library_root", None)  # recorded, not compared: not in DeepGEMM's key (measured)
    return {"status": "built", "identity": identity, "entries": len(entries(cache_dir)),
            "library_root_at_build": library_root, "items": [asdict(o) for o in outcomes]}, collect(cache_dir)


def section_from_bundle(plan: Plan, added: AddedBundle) -> tuple[dict, dict[str, bytes]]:
    """``--add``: the DeepGEMM part of another bundle, when it covers this plan's shapes with this DeepGEMM."""
    from ..engines.vllm_deepgemm import library_identity
    from ..errors import BadInput

    other, manifest = added.path, added.manifest
    files = {name: data for name, data in added.files.items() if name.startswith(PREFIX)}
    section = manifest.get("deepgemm") or {}
    if section.get("status") != "built":
        raise BadInput(f"--add {other}: that bundle has no built DeepGEMM part (status {section.get('status')!r}): "
                       "build it on a GPU of the target kind first")
    theirs = {i["id"]: i["params"] for i in manifest["plan"]["items"] if i.get("needs_gpu")}
    missing = [i.id for i in plan.items_of(NAME) if theirs.get(i.id) != i.params]
    if missing:
        raise BadInput(f"--add {other}: it does not cover DeepGEMM shape {missing[0]} of this plan "
                       f"({len(missing)} missing): build it from this plan (`aotwarm build --plan`) on the GPU node")
    if manifest["target"]["num_sms"] != plan.target["num_sms"] or manifest["target"]["capability"] != plan.target["capability"]:
        raise BadInput(f"--add {other}: built for {manifest['target']['name']} with {manifest['target']['num_sms']} SMs, "
                       f"this plan targets {plan.target['name']} with {plan.target['num_sms']}")
    here = library_identity()
    for key in ("version", "include_sha256"):
        if here.get("found") and here.get(key) != section["identity"].get(key):
            raise BadInput(f"--add {other}: its DeepGEMM {key} ({str(section['identity'].get(key))[:16]}) differs from "
                           f"this builder's ({str(here.get(key))[:16]}): use the same vLLM build on both")
    return {**section, "added_from": str(other)}, files


def _device_identity(cache_dir: Path) -> dict:
    """arch and SM count as DeepGEMM saw them, from a child (keeps CUDA out of the build process)."""
    proc = subprocess.run([sys.executable, "-m", "aotwarm.deepgemm_worker", "identity"],
                          capture_output=True, text=True, env={**os.environ, "DG_JIT_CACHE_DIR": str(cache_dir)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"reading DeepGEMM's device identity failed: {proc.stderr.strip()[-400:]}")
    return json.loads(lines[-1])


def collect(cache_dir: Path) -> dict[str, bytes]:
    """Every finished DeepGEMM cache entry of the build's cache, as bundle members."""
    files: dict[str, bytes] = {}
    root = Path(cache_dir) / "cache"
    for name in sorted(entries(cache_dir)):
        folder = root / name
        if not (folder / "kernel.cubin").is_file():
            continue  # an entry another process is still writing
        for f in sorted(folder.iterdir()):
            if f.is_file():
                files[f"{PREFIX}cache/{name}/{f.name}"] = f.read_bytes()
    return files


def identity_mismatches(section: dict, gpu: bool) -> list[Mismatch]:
    """Refusals for a node whose DeepGEMM, nvcc (or, with ``gpu``, arch / SM count) differ from the build's."""
    if section.get("status") != "built":
        return []
    from ..engines.vllm_deepgemm import library_identity

    want = section["identity"]
    have = library_identity()
    out: list[Mismatch] = []
    if not have.get("found"):
        return [Mismatch("DeepGEMM", str(want.get("version")), "not importable",
                         "install the vLLM build the bundle was made with (vllm.third_party.deep_gemm)")]
    checks = [("DeepGEMM version", "version", "install the same vLLM / DeepGEMM"),
              ("DeepGEMM JIT headers", "include_sha256", "the headers are hashed into every kernel key: same DeepGEMM"),
              ("nvcc release", "nvcc", "DeepGEMM keys its cache by the compiler: install the CUDA toolkit of the build")]
    for label, key, hint in checks:
        if str(want.get(key)) != str(have.get(key)):
            out.append(Mismatch(label, str(want.get(key))[:16], str(have.get(key))[:16], hint))
    if gpu:
        dev = _device_identity(Path(tempfile.gettempdir()))
        for label, key in (("DeepGEMM arch", "arch"), ("DeepGEMM SM count", "num_sms")):
            if str(want.get(key)) != str(dev.get(key)):
                out.append(Mismatch(label, str(want.get(key)), str(dev.get(key)),
                                    "generated DeepGEMM code bakes this in: build for this GPU (--gpu / --num-sms)"))
    return out


def sentinel_compiler(folder: Path) -> tuple[str, Path]:
    """An nvcc stand-in for verify: answers ``--version`` like the real one, logs and fails any compile."""
    from ..engines.vllm_deepgemm import _nvcc

    log = folder / "nvcc-calls.log"
    script = folder / "nvcc"
    script.write_text(f"#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then exec '{_nvcc()}' --version; fi\n"
                      f"echo \"$@\" >> '{log}'\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def verify_section(plan: Plan, manifest: dict, cache_dir: Path, timeout: float = 1800.0) -> dict:
    """Run every DeepGEMM item over its M range against the installed cache (``cache_dir``: the install's
    ``DIR/triton``); count new kernels and compiles."""
    section = manifest.get(NAME) or {}
    cache_dir = Path(cache_dir) / INSTALL_SUBDIR
    items = plan.items_of(NAME)
    if not items or section.get("status") != "built":
        return {"status": section.get("status", "none"), "items": 0, "new_kernels": 0, "compile_attempts": 0,
                "failed_items": []}
    before = entries(cache_dir)
    with tempfile.TemporaryDirectory(prefix="aotwarm-dg-verify-") as tmp:
        compiler, log = sentinel_compiler(Path(tmp))
        settings = {"num_sms": section["identity"]["num_sms"], "max_tokens": plan.serving["max_num_batched_tokens"]}
        # nothing compiles in a passing replay, so the shapes run side by side on the GPU
        outcomes = run_items(items, "verify", cache_dir, Path(tmp) / "logs", len(items), settings,
                             plan.serving.get("deep_gemm_e8m0", True), {"DG_JIT_NVCC_COMPILER": compiler}, timeout)
        attempts = log.read_text().splitlines() if log.exists() else []
    new = sorted(entries(cache_dir) - before)
    return {"status": "verified", "items": len(items), "m_visited": sum(o.m_visited for o in outcomes),
            "new_kernels": len(new), "compile_attempts": len(attempts), "cached_kernels": len(before),
            "failed_items": [f"{o.id}: {o.error}" for o in outcomes if not o.ok]}
