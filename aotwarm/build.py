"""Build: run a plan's work items in child processes under the virtual target GPU, then bundle.

Workers share one Triton cache directory per plan (Triton writes entries atomically, so parallel
workers are safe) under a work directory that survives the run: a re-run skips items that finished
and reuses every compiled kernel.  The bundle holds exactly the cache entries the plan's items
compiled or hit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .bundle import collect_entries, write_bundle
from .envinfo import fingerprint
from .errors import BadInput, BuildIncomplete
from .fsutil import atomic_write_text
from .plan import Plan
from .pool import PoolOptions, Task, run_tasks


@dataclass
class ItemOutcome:
    id: str
    ok: bool
    error: str | None = None
    compiled: int = 0
    hits: int = 0
    entries: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resumed: bool = False
    launchers: list[str] = field(default_factory=list)
    autotune: list[dict] = field(default_factory=list)
    engine_runtime: dict = field(default_factory=dict)  # how the engine ran in the worker (e.g. vLLM platform)


@dataclass
class BuildOptions:
    """What goes into the bundle besides compiled kernels."""

    launchers: bool = True  # prebuild cuda_utils + one launcher per kernel signature
    tune: bool = False  # measure autotune results here, on a GPU of the target kind
    tuning_from: Path | None = None  # reuse measured results from an earlier bundle
    pin_autotune: str | None = None  # "first": pin the engine's first config, unmeasured
    add_deepgemm: Path | None = None  # take the parts built elsewhere from this bundle (DeepGEMM, FlashInfer)


@dataclass
class BuildResult:
    bundle: Path | None
    manifest: dict | None
    outcomes: list[ItemOutcome]
    seconds: float
    work_dir: Path
    autotune: list = field(default_factory=list)
    launcher_note: str = ""
    cuda_utils_entry: str = ""  # Triton >= 3.8: re-keyed for the node's paths by install
    driver_launchers: set[str] = field(default_factory=set)  # cuda_utils built alone (a plan without Triton items)
    sections: dict[str, dict] = field(default_factory=dict)  # each other cache kind's build record, by kind name

    @property
    def deepgemm(self) -> dict:
        return self.sections.get("deepgemm", {"status": "none", "items": []})

    @property
    def flashinfer(self) -> dict:
        return self.sections.get("flashinfer", {"status": "none", "modules": []})

    @property
    def not_built(self) -> list[str]:
        """Kinds with planned items this bundle lacks, in whole or in part (to build elsewhere, or not at all)."""
        return [name for name, section in self.sections.items()
                if section.get("status") == "not-built" or section.get("not_built")]

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def entries(self) -> set[str]:
        return {e for o in self.outcomes if o.ok for e in o.entries}

    @property
    def launcher_entries(self) -> set[str]:
        return {e for o in self.outcomes if o.ok for e in o.launchers} | self.driver_launchers

    def summary(self) -> dict:
        ok = [o for o in self.outcomes if o.ok]
        return {
            "work_items": len(self.outcomes),
            "failed_items": len(self.failed),
            "resumed_items": sum(o.resumed for o in self.outcomes),
            "kernels": len({k for o in ok for k in o.kernels}),
            "autotune_keys": (self.manifest or {}).get("plan", {}).get("probe", {}).get("autotune_keys", 0),
            "compiled": sum(o.compiled for o in ok if not o.resumed),  # in this run
            "cache_hits": sum(o.hits for o in ok if not o.resumed),
            "cache_entries": len(self.entries),
            "planned_jit_keys": len((self.manifest or {}).get("plan", {}).get("probe", {}).get("jit_keys", [])),
            "launchers": len(self.launcher_entries),
            "autotune_shipped": sum(r.provenance != "node" for r in self.autotune),
            "autotune_left_to_node": sum(r.provenance == "node" for r in self.autotune),
            "deepgemm": self.deepgemm["status"],
            "deepgemm_kernels": self.deepgemm.get("entries", 0),
            "flashinfer": self.flashinfer["status"],
            "flashinfer_modules": len(self.flashinfer.get("modules", [])) if self.flashinfer["status"] == "built" else 0,
            "seconds": round(self.seconds, 1),
        }


def default_work_dir(output: Path, plan: Plan) -> Path:
    return output.parent / ".aotwarm-work" / plan.hash[:16]


def _state_path(work_dir: Path, launchers: bool) -> Path:
    return work_dir / ("done-with-launchers.json" if launchers else "done.json")


def _load_state(work_dir: Path, launchers: bool) -> dict[str, dict]:
    try:
        return json.loads(_state_path(work_dir, launchers).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def build(plan: Plan, output: Path, jobs: int, keep_going: bool = False, work_dir: Path | None = None,
          item_timeout: float = 1800.0, on_result: Callable[[ItemOutcome], None] | None = None,
          options: BuildOptions | None = None, on_phase: Callable[[str], None] | None = None) -> BuildResult:
    """Compile every work item of ``plan`` and write the bundle to ``output``.

    Raises BuildIncomplete (exit 1) when an item failed: without ``keep_going`` no bundle is written;
    with it the bundle is written and its manifest lists the failed items as not covered.
    """
    start = time.monotonic()
    output = Path(output)
    # absolute: workers and the launcher compiler run from other directories
    work_dir = (Path(work_dir) if work_dir else default_work_dir(output, plan)).absolute()
    cache_root = (work_dir / "triton").resolve()
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create {err.filename}: {err.strerror}; choose a writable -o / --work-dir")
    if not os.access(output.parent, os.W_OK):
        raise BadInput(f"output directory {output.parent} is not writable: choose another -o")
    options = options or BuildOptions()
    reusable: dict = {}
    if options.tuning_from:
        from .autotune import reusable_from_bundle

        reusable = reusable_from_bundle(Path(options.tuning_from))
    if options.tune:
        _check_tuning_gpu(plan)
    launcher_env, launcher_note = _launcher_setup(options.launchers, work_dir)
    done = _load_state(work_dir, bool(launcher_env))
    outcomes: dict[str, ItemOutcome] = {}
    for item in plan.triton_items:
        if item.id in done:
            outcomes[item.id] = ItemOutcome(**{**done[item.id], "resumed": True})
    pending = [Task(i.id, i.op, i.params) for i in plan.triton_items if i.id not in outcomes]

    def collect(res: dict) -> None:
        compiles = res.get("compiles", [])
        outcome = ItemOutcome(
            id=res["id"], ok=bool(res["ok"]), error=res.get("error"),
            compiled=sum(not c["cache_hit"] for c in compiles), hits=sum(c["cache_hit"] for c in compiles),
            entries=sorted({c["entry"] for c in compiles}), kernels=sorted({c["kernel"] for c in compiles}),
            seconds=res.get("seconds", 0.0), launchers=res.get("launchers", []), autotune=res.get("autotune", []),
            engine_runtime=res.get("engine_runtime", {}))
        outcomes[outcome.id] = outcome
        if outcome.ok:
            done[outcome.id] = {k: v for k, v in outcome.__dict__.items() if k != "resumed"}
            atomic_write_text(_state_path(work_dir, bool(launcher_env)), json.dumps(done, sort_keys=True))
        if on_result:
            on_result(outcome)

    env = {**os.environ, "TRITON_CACHE_DIR": str(cache_root), "TRITON_STORE_BINARY_ONLY": "1",
           "CUDA_VISIBLE_DEVICES": "", "AOTWARM_COMPILE_LOCK_DIR": str(work_dir / "locks"), **launcher_env}
    if pending:
        opts = PoolOptions(mode="build", target_json=json.dumps(plan.target), jobs=jobs, env=env,
                           log_dir=work_dir / "logs", item_timeout=item_timeout, keep_going=keep_going)
        run_tasks(pending, opts, collect)
    ordered = [outcomes[i.id] if i.id in outcomes else ItemOutcome(i.id, False, "not run: the build stopped at an earlier failure")
               for i in plan.triton_items]
    result = BuildResult(None, None, ordered, time.monotonic() - start, work_dir)
    if result.failed and not keep_going:
        first = result.failed[0]
        raise BuildIncomplete(f"work item {first.id} failed: {first.error} ({len(result.failed)} item(s) not built; "
                              f"no bundle written; re-run to resume, or --keep-going to bundle the rest)")
    result.launcher_note = launcher_note
    if launcher_env and not plan.triton_items:
        result.driver_launchers = _driver_helper_alone(plan, env, work_dir, item_timeout)
    measured, measured_source = {}, {}
    if options.tune:
        if on_phase:
            on_phase("measuring autotune results on this GPU")
        measured, measured_source = _tune(plan, cache_root, work_dir, result, item_timeout)
    from .autotune import assemble

    records = [r for o in result.outcomes if o.ok for r in o.autotune]
    result.autotune = assemble(records, measured, measured_source, reusable, options.pin_autotune)
    from .kinds import SIDE_KINDS, BuildContext

    side_files: dict[str, bytes] = {}
    added = _read_added(options.add_deepgemm) if options.add_deepgemm else None
    ctx = BuildContext(plan, work_dir, jobs, item_timeout,
                       {kind.NAME: added for kind in SIDE_KINDS} if added is not None else {})
    for kind in SIDE_KINDS:
        items = plan.items_of(kind.NAME)
        if items and on_phase:
            on_phase(f"{kind.NAME}: {len(items)} item(s)")
        section, files = kind.build_section(ctx)
        result.sections[kind.NAME] = section
        side_files.update(files)
        if section["status"] == "failed" and not keep_going:
            raise BuildIncomplete(f"{kind.NAME}: {section['reason']}; no bundle written (re-run to resume: what was "
                                  f"compiled stays in the work directory {work_dir})")
    from .launchers import cuda_utils_node_keyed

    if result.launcher_entries and cuda_utils_node_keyed():
        result.cuda_utils_entry = next((e for e in sorted(result.launcher_entries)
                                        if any((cache_root / e).glob("cuda_utils*"))), "")
    manifest = _manifest(plan, result)
    files = collect_entries(cache_root, result.entries | result.launcher_entries)
    files.update(side_files)
    for r in result.autotune:
        if r.content is not None:
            files[f"triton/{r.disk_key}/{r.file_name}"] = r.content
    result.manifest = write_bundle(output, manifest, files)
    result.bundle = output
    result.seconds = time.monotonic() - start
    if result.failed:
        raise BuildIncomplete(f"{len(result.failed)} work item(s) failed (first: {result.failed[0].id}: "
                              f"{result.failed[0].error}); bundle written to {output} without them")
    return result


def _read_added(path: Path):
    """``--add BUNDLE``, read and checked whole (a bundle the node would refuse is refused here)."""
    from .bundle import read_bundle
    from .kinds.base import AddedBundle

    files: dict[str, bytes] = {}
    manifest = read_bundle(Path(path), sink=files.__setitem__)
    return AddedBundle(Path(path), manifest, files)


def _driver_helper_alone(plan: Plan, env: dict, work_dir: Path, item_timeout: float) -> set[str]:
    """Triton's ``cuda_utils`` for a plan with no Triton kernel (e.g. DeepGEMM only): the engine still imports
    Triton and starts its driver, which would build it with the node's C compiler."""
    built: list[dict] = []
    opts = PoolOptions(mode="build", target_json=json.dumps(plan.target), jobs=1, env=env,
                       log_dir=work_dir / "logs", item_timeout=item_timeout, keep_going=False)
    run_tasks([Task("launchers/cuda_utils", "launchers.cuda_utils", {})], opts, built.append)
    if not built or not built[0]["ok"]:
        error = built[0]["error"] if built else "the worker returned nothing"
        raise BuildIncomplete(f"building Triton's cuda_utils failed: {error}; no bundle written")
    return set(built[0].get("launchers", []))


def _engine_runtime(result: BuildResult) -> dict:
    """What the workers reported about how the engine ran, e.g. {"vllm_platform": ["aotwarm-shim"]}."""
    merged: dict[str, set] = {}
    for outcome in result.outcomes:
        for key, value in outcome.engine_runtime.items():
            merged.setdefault(key, set()).add(value)
    return {k: sorted(v) for k, v in sorted(merged.items())}


def _manifest(plan: Plan, result: BuildResult) -> dict:
    from .engines import detect_engine
    from .kinds import SIDE_KINDS

    fp = fingerprint(arch=plan.target["capability"][0] * 10 + plan.target["capability"][1])
    engine = detect_engine(plan.engine["name"]).to_dict()
    if engine["source_sha256"] != plan.engine["source_sha256"]:
        raise BadInput(f"the installed {engine['name']} ({engine['version']}) is not the one the plan was made with "
                       f"({plan.engine['version']}): re-run `aotwarm plan`")
    failed = {o.id: o.error for o in result.failed}
    counts = {p: sum(r.provenance == p for r in result.autotune) for p in ("measured", "reused", "pinned", "node")}
    coverage = []
    for fam in plan.families:
        items = [i for i in plan.items if i.family == fam.family]
        status = "incomplete" if any(i.id in failed for i in items) else fam.status
        uncovered = list(fam.uncovered) + [f"work item {i.id} failed to build: {failed[i.id]}" for i in items
                                           if i.id in failed]
        for kind in SIDE_KINDS:
            section = result.sections.get(kind.NAME, {"status": "none"})
            if any(i.kind == kind.NAME for i in items) and section["status"] != "built":
                status = "not-built"
                uncovered.append(f"{kind.LABEL} not in this bundle: {section.get('reason', section['status'])}")
            elif any(i.kind == kind.NAME for i in items) and section.get("not_built"):
                status = "not-built"
                uncovered.extend(f"not in this bundle: {part}" for part in section["not_built"])
        coverage.append({"family": fam.family, "status": status, "summary": fam.summary,
                         "kernels": [k.__dict__ for k in fam.kernels], "uncovered": uncovered,
                         "work_items": len(items)})
    return {
        "aotwarm_version": __version__,
        "plan": json.loads(plan.to_json()),
        "plan_hash": plan.hash,
        "target": plan.target,
        "engine": engine,
        "engine_runtime": _engine_runtime(result),
        "fingerprint": fp.to_dict(),
        "coverage": coverage,
        "build": {"work_items": len(result.outcomes), "failed_items": sorted(failed),
                  "cache_entries": len(result.entries), "store_binary_only": True},
        "triton_cache": {"placeholder": "@AOTWARM_TRITON_CACHE_DIR@"},
        "autotune": {"results": [r.manifest_entry() for r in result.autotune], "counts": counts},
        "launchers": {"included": bool(result.launcher_entries), "count": len(result.launcher_entries),
                      "python_abi": fp.python_abi, "note": result.launcher_note,
                      "node_keyed_entry": result.cuda_utils_entry},
        **{name: section for name, section in result.sections.items()},
    }


def _launcher_setup(wanted: bool, work_dir: Path) -> tuple[dict[str, str], str]:
    """Environment for workers that prebuild launchers, and a note for the manifest."""
    if not wanted:
        return {}, "not included: --no-launchers (the node builds them with its C compiler on first use)"
    from .launchers import LaunchersUnavailable, builder_problem, compiler_wrapper, libcuda_dir

    problem = builder_problem()
    if problem is None:
        try:
            stub = libcuda_dir()
        except LaunchersUnavailable as err:
            problem = str(err)
    if problem is not None:
        return {}, f"not included: {problem}; the node builds them with its C compiler on first use"
    env = {"AOTWARM_LAUNCHERS": "1", "CC": compiler_wrapper(work_dir)}
    if stub:
        env["TRITON_LIBCUDA_PATH"] = stub
    from .launchers import per_kernel_launchers

    if per_kernel_launchers():
        return env, "cuda_utils and one launcher per kernel signature, built for this Python ABI"
    return env, ("cuda_utils (Triton >= 3.8 has no per-kernel launcher), built for this Python ABI; its cache key "
                 "holds the node's Triton and driver paths, so install files it under the node's key")


def _check_tuning_gpu(plan: Plan) -> None:
    import torch

    want = plan.target
    if not torch.cuda.is_available():
        raise BadInput(f"--tune measures autotune results on a GPU of the target kind ({want['name']}), and none is "
                       f"visible here: run it on such a node, or use --tuning-from a bundle tuned there")
    name = torch.cuda.get_device_name(0)
    if name != want["name"] or list(torch.cuda.get_device_capability(0)) != list(want["capability"]):
        raise BadInput(f"--tune: this GPU is {name!r}, the plan's target is {want['name']!r}: timings from another "
                       f"GPU would be shipped as measured for the target; tune on the target GPU")


def _tune(plan: Plan, cache_root: Path, work_dir: Path, result: BuildResult, item_timeout: float
          ) -> tuple[dict[str, bytes], dict]:
    """Let Triton benchmark every planned autotune key on this GPU; move its results out of the work cache."""
    import datetime
    import platform

    import torch
    import triton

    from .autotune import unique_records

    records = unique_records([r for o in result.outcomes if o.ok for r in o.autotune])
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache_root), "TRITON_CACHE_AUTOTUNING": "1"}
    for r in records:  # stale results from an earlier run would be taken as measured now
        (cache_root / r["disk_key"] / r["file_name"]).unlink(missing_ok=True)
    errors: list[str] = []
    opts = PoolOptions(mode="replay", target_json=json.dumps(plan.target), jobs=1, env=env,
                       log_dir=work_dir / "logs", item_timeout=item_timeout, keep_going=True)
    run_tasks([Task(i.id, i.op, i.params) for i in plan.triton_items], opts,
              lambda res: errors.append(f"{res['id']}: {res['error']}") if not res["ok"] else None)
    if errors:
        raise BuildIncomplete(f"measuring autotune results failed for {len(errors)} item(s), first: {errors[0]}")
    measured: dict[str, bytes] = {}
    for r in records:
        path = cache_root / r["disk_key"] / r["file_name"]
        if path.is_file():
            measured[r["disk_key"]] = path.read_bytes()
            path.unlink()
            try:
                path.parent.rmdir()
            except OSError:
                pass
    source = {"gpu": torch.cuda.get_device_name(0), "triton": triton.__version__, "torch": torch.__version__,
              "python": platform.python_version(), "date": datetime.date.today().isoformat()}
    return measured, source
