"""FlashInfer's nvcc JIT modules as a cache kind: built without a GPU, shipped and loaded as AOT artifacts.

FlashInfer's own JIT cache (``~/.cache/flashinfer/<ver>/<arch>/cached_ops``) is not portable: ninja
decides rebuilds from absolute paths and mtimes.  Its AOT route is: ``JitSpec.build_and_load()`` first
asks ``flashinfer.jit.env.get_aot_artifacts(name)``, which takes ``<jit_cache_dir>/<name>/<name>.so``
from any *jit-cache provider* the ``flashinfer_jit_cache`` package lists, with no freshness check.

* **build** (``flashinfer_child build``): FlashInfer's generators give the specs, ``build_jit_specs``
  compiles them with nvcc for the target arch (``FLASHINFER_CUDA_ARCH_LIST``), no GPU, with the toolkit
  ``cuda_toolkit.toolkit_home()`` assembles; the workspace is shared by every build on the machine
  (ninja rebuilds nothing that is up to date).  Members: ``flashinfer/<name>/<name>.so``.
* **install**: the modules go to ``DIR/triton/.flashinfer/jit_cache/<name>/<name>.so`` (inside the
  generation: published with the Triton cache by one rename), and a provider package
  ``DIR/triton/.flashinfer/python/flashinfer_jit_cache`` lists them (module names, arch, the FlashInfer
  version they were built against).  The engine needs that folder on ``PYTHONPATH``.  It stands in for
  the ``flashinfer-jit-cache`` wheel, which the engine must then not also have installed.
* **verify** (``flashinfer_child verify``): ``FLASHINFER_DISABLE_JIT=1`` and each planned spec's own
  ``build_and_load()``: pass = every module loads from the install, no build.  Loading needs no GPU.
* **identity**: FlashInfer ignores a provider whose version differs from its own, modules are tvm-ffi
  libraries linked against ``libcudart.so.<major>``: the FlashInfer version, the tvm-ffi version and the
  CUDA runtime major must match the node's.
* **TRT-LLM DeepGEMM cubins** (``fp8_blockscale_gemm_90``'s own run-time nvcc, per GEMM shape and M < 32):
  ``<TRTLLM_DG_CACHE_DIR>/cache/<name>/nvcc_kernel.cubin``, found by name only (the name holds the shape
  and the config FlashInfer's heuristics chose from M and the SM count).  Built like DeepGEMM's kernels on
  a GPU of the target kind with the exact SM count: FlashInfer's ``fp8_blockscale_gemm_sm90`` (what vLLM's
  ``flashinfer_fp8_blockscale_gemm`` resolves to) at every planned M, the module loaded from the bundle's
  own files.  GPU-less: not-built, and ``build --add`` takes the part from a bundle built on such a GPU
  (or the modules from a GPU-less build, on the GPU node).  Installed under ``.flashinfer/trtllm_dg``
  (``TRTLLM_DG_CACHE_DIR``); verify replays every M with a failing nvcc (``TRTLLM_DG_NVCC_COMPILER``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from .base import (AddedBundle, BuildContext, InstallContext, Mismatch, merge_env, target_gpu_problem,
                   write_fresh)

LABEL = "FlashInfer modules"  # how output names this kind's files
NAME = "flashinfer"
PREFIX = "flashinfer/"
INSTALL_SUBDIR = ".flashinfer"
JIT_CACHE = "jit_cache"
PROVIDER = "python"
NESTED = "trtllm_dg"  # member sub-prefix and install folder of the TRT-LLM DeepGEMM cubins
NESTED_OP = "flashinfer.trtllm_dg_swapab"
_MEMBER = re.compile(r"^flashinfer/([a-z0-9_]{1,128})/\1\.so$")
_NESTED_MEMBER = re.compile(r"^flashinfer/trtllm_dg/gemm(_swapAB)?(_[0-9]{1,9}){9,12}_(Normal|GroupedWithOffset|"
                            r"StridedBatched)/nvcc_kernel\.cubin$")
# FlashInfer links every module with -lcuda.  The link stub a GPU-less builder has exports no driver symbol, so
# the linker's --as-needed (the toolchain default) would drop the dependency and a module calling the driver
# (fp8_blockscale_gemm_90: cuLibraryLoadData) would not load on the node (seen on the H200).  Keep it.
LINK_DRIVER = "-Wl,--no-as-needed -lcuda -Wl,--as-needed"


def member_ok(name: str) -> bool:
    return bool(_MEMBER.match(name) or _NESTED_MEMBER.match(name))


def shipped(manifest: dict | None) -> bool:
    return bool(manifest) and (manifest.get(NAME) or {}).get("status") == "built"


def nested_shipped(manifest: dict | None) -> bool:
    return shipped(manifest) and ((manifest or {})[NAME].get(NESTED) or {}).get("status") == "built"


def _modules(plan) -> list[dict]:
    return [{"name": i.params["name"], "generator": i.params["generator"]} for i in plan.items_of(NAME)
            if i.op != NESTED_OP]


def _nested_items(plan) -> list[dict]:
    return [{"id": i.id, **i.params} for i in plan.items_of(NAME) if i.op == NESTED_OP]


def _child(mode: str, request: dict, env: dict[str, str], timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "aotwarm.kinds.flashinfer_child", mode, json.dumps(request)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"the FlashInfer {mode} child exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def arch_list(target: dict) -> str:
    """``FLASHINFER_CUDA_ARCH_LIST`` for the target (FlashInfer adds the arch suffix itself: 9.0 -> 90a)."""
    major, minor = target["capability"]
    return f"{major}.{minor}"


def workspace() -> Path:
    from ..fsutil import user_cache_dir

    return user_cache_dir() / "flashinfer-build"


def build_section(ctx: BuildContext) -> tuple[dict, dict[str, bytes]]:
    """The modules (nvcc, no GPU, or from ``--add``), then the TRT-LLM DeepGEMM cubins (a GPU of the target
    kind, or from ``--add``, or not-built with the reason)."""
    modules = _modules(ctx.plan)
    if not modules:
        return {"status": "none", "modules": []}, {}
    added = ctx.add_from.get(NAME)
    taken = _modules_from(added, ctx.plan, modules) if added is not None else None
    if taken is not None:
        section, files = taken
    else:
        section, files = _build_modules(ctx, modules)
    if section["status"] != "built":
        return section, files
    nested, nested_files = _nested_section(ctx, files, added)
    section[NESTED] = nested
    if nested["status"] == "not-built":
        section["not_built"] = [f"TRT-LLM DeepGEMM cubins of fp8_blockscale_gemm_90: {nested['reason']}"]
    elif nested["status"] == "failed" and nested.get("reason"):
        section["status"], section["reason"] = "failed", f"TRT-LLM DeepGEMM cubins: {nested['reason']}"
    return section, {**files, **nested_files}


def _build_modules(ctx: BuildContext, modules: list[dict]) -> tuple[dict, dict[str, bytes]]:
    from ..cuda_toolkit import ToolkitMissing, toolkit_home

    try:
        toolkit = toolkit_home()
    except ToolkitMissing as err:
        return {"status": "not-built", "reason": str(err), "modules": modules}, {}
    env = {**os.environ, "CUDA_HOME": toolkit.home, "FLASHINFER_CUDA_ARCH_LIST": arch_list(ctx.plan.target),
           "FLASHINFER_WORKSPACE_BASE": str(workspace()), "CUDA_VISIBLE_DEVICES": "",
           "FLASHINFER_EXTRA_LDFLAGS": LINK_DRIVER}
    env.pop("FLASHINFER_DISABLE_JIT", None)
    answer = _child("build", {"modules": modules}, env, ctx.timeout)
    if not answer["ok"]:
        return {"status": "failed", "reason": f"FlashInfer modules {', '.join(m['name'] for m in modules)}: "
                f"{answer['error']}", "modules": modules, "toolkit": toolkit.to_dict()}, {}
    files = {f"{PREFIX}{name}/{name}.so": Path(path).read_bytes() for name, path in sorted(answer["built"].items())}
    identity = {**answer["identity"], "cuda_arch_list": arch_list(ctx.plan.target), "cuda_runtime": toolkit.runtime,
                "nvcc_release": toolkit.nvcc_release, "extra_ldflags": LINK_DRIVER}
    return {"status": "built", "identity": identity, "toolkit": toolkit.to_dict(),
            "modules": [{**m, "bytes": len(files[f"{PREFIX}{m['name']}/{m['name']}.so"])} for m in modules]}, files


def _modules_from(added: AddedBundle, plan, modules: list[dict]) -> tuple[dict, dict[str, bytes]] | None:
    """``--add``: the modules of another bundle, when it has every module of this plan built with this node's
    FlashInfer (None: it has none, so they are built here)."""
    from ..errors import BadInput

    theirs = added.manifest.get(NAME) or {}
    if theirs.get("status") != "built":
        return None
    names = {m["name"] for m in theirs.get("modules", [])}
    missing = [m["name"] for m in modules if m["name"] not in names]
    if missing:
        raise BadInput(f"--add {added.path}: its FlashInfer part lacks module {missing[0]} of this plan: build both "
                       f"from the same plan")
    if theirs["identity"].get("cuda_arch_list") != arch_list(plan.target):
        raise BadInput(f"--add {added.path}: its FlashInfer modules are for {theirs['identity'].get('cuda_arch_list')}, "
                       f"this plan targets {arch_list(plan.target)}")
    bad = mismatches({NAME: {"status": "built", "identity": theirs["identity"]}}, gpu=None)
    if bad:
        raise BadInput(f"--add {added.path}: {bad[0].line()}")
    files = {f"{PREFIX}{m['name']}/{m['name']}.so": added.files[f"{PREFIX}{m['name']}/{m['name']}.so"] for m in modules}
    keep = {k: v for k, v in theirs.items() if k not in (NESTED, "not_built")}
    return {**keep, "modules_added_from": str(added.path)}, files


def _nested_section(ctx: BuildContext, module_files: dict[str, bytes], added: AddedBundle | None
                    ) -> tuple[dict, dict[str, bytes]]:
    items = _nested_items(ctx.plan)
    if not items:
        return {"status": "none"}, {}
    prefix = f"{PREFIX}{NESTED}/"
    theirs = ((added.manifest.get(NAME) or {}).get(NESTED) or {}) if added is not None else {}
    if theirs.get("status") == "built":
        want = {(i["n"], i["k"], i["m_first"], i["m_last"]) for i in items}
        have = {(i["n"], i["k"], i["m_first"], i["m_last"]) for i in theirs.get("items", [])}
        if not want <= have or theirs.get("num_sms") != ctx.plan.target["num_sms"]:
            from ..errors import BadInput

            raise BadInput(f"--add {added.path}: its TRT-LLM DeepGEMM cubins do not cover this plan's shapes on "
                           f"{ctx.plan.target['num_sms']} SMs: build them from this plan on the GPU node")
        return {**theirs, "added_from": str(added.path)}, {k: v for k, v in added.files.items() if k.startswith(prefix)}
    problem = target_gpu_problem(ctx.plan.target, exact_sms=True)
    if problem is not None:
        return {"status": "not-built", "items": items,
                "reason": f"{problem}: they compile on a GPU of the target kind ({ctx.plan.target['name']}, "
                          f"{ctx.plan.target['num_sms']} SMs); build there (`aotwarm build --plan ... --add "
                          f"THIS_BUNDLE`), or --add a bundle built there"}, {}
    cache = ctx.work_dir / "trtllm_dg"
    with _provider(module_files, ctx.plan.target) as env:
        answer = _nested_child(items, cache, env, ctx.timeout)
    if not answer["ok"]:
        return {"status": "failed", "reason": answer["error"], "items": items}, {}
    files = {f"{prefix}{name}/nvcc_kernel.cubin": (cache / "cache" / name / "nvcc_kernel.cubin").read_bytes()
             for name in answer["cubins"]}
    return {"status": "built", "items": items, "cubins": len(files), "num_sms": answer["num_sms"],
            "calls": answer["calls"], "new_here": len(answer["new"])}, files


@contextlib.contextmanager
def _provider(module_files: dict[str, bytes], target: dict):
    """A temporary install of the modules (provider package on PYTHONPATH, JIT disabled): the environment for
    a child that must use exactly these modules."""
    with tempfile.TemporaryDirectory(prefix="aotwarm-fi-provider-") as tmp:
        root = Path(tmp)
        for name, data in module_files.items():
            write_fresh(root / JIT_CACHE / name[len(PREFIX):], data)
        names = sorted(name[len(PREFIX):].split("/")[0] for name in module_files)
        from importlib.metadata import version  # the provider must carry FlashInfer's own version

        write_fresh(root / PROVIDER / "flashinfer_jit_cache" / "__init__.py",
                    provider_source(version("flashinfer-python"), [_sm_label(target)], names).encode())
        yield merge_env(os.environ, {"PYTHONPATH": str(root / PROVIDER), "FLASHINFER_DISABLE_JIT": "1"})


def _sm_label(target: dict) -> str:
    major, minor = target["capability"]
    return f"sm{major}{minor}" + ("a" if major in (9, 10) else "")


def _nested_child(items: list[dict], cache: Path, env: dict, timeout: float, nvcc: str | None = None) -> dict:
    env = {**env, "TRTLLM_DG_CACHE_DIR": str(cache)}
    if nvcc is not None:
        env["TRTLLM_DG_NVCC_COMPILER"] = nvcc
    return _child("nested", {"items": items, "cache": str(cache)}, env, timeout)


def install_member(ctx: InstallContext, name: str, data: bytes) -> None:
    rel = name[len(PREFIX):]
    if rel.startswith(NESTED + "/"):  # TRTLLM_DG_CACHE_DIR/cache/<name>/nvcc_kernel.cubin
        write_fresh(ctx.generation / INSTALL_SUBDIR / NESTED / "cache" / rel[len(NESTED) + 1:], data)
    else:
        write_fresh(ctx.generation / INSTALL_SUBDIR / JIT_CACHE / rel, data)
    ctx.files += 1


def install_finish(ctx: InstallContext) -> None:
    """(Re)write the provider listing every module now in the generation (earlier installs' included)."""
    section = ctx.manifest.get(NAME) or {}
    if not shipped(ctx.manifest):
        return
    root = ctx.generation / INSTALL_SUBDIR
    names = sorted(p.name for p in (root / JIT_CACHE).iterdir() if (p / f"{p.name}.so").is_file())
    # FlashInfer lists the provider's architectures as "sm90a" from its own compilation context
    identity = section["identity"]
    write_fresh(root / PROVIDER / "flashinfer_jit_cache" / "__init__.py",
                provider_source(identity["flashinfer_version"], identity["cuda_architectures"], names).encode())


def provider_source(version: str, archs: list[str], modules: list[str]) -> str:
    """The ``flashinfer_jit_cache`` package FlashInfer asks for its AOT providers (``jit/env.py``)."""
    return f'''"""FlashInfer jit-cache provider written by aotwarm install: the modules of the installed bundle(s)."""
from dataclasses import dataclass
from pathlib import Path

__version__ = {version!r}


@dataclass(frozen=True)
class Provider:
    provider_id: str
    distribution: str
    version: str
    jit_cache_dir: str
    cuda_architectures: tuple
    modules: tuple


def get_jit_cache_providers():
    # resolved at import: DIR/triton/{INSTALL_SUBDIR}/{JIT_CACHE}, through the published generation
    here = Path(__file__).parent.parent.parent
    return [Provider("aotwarm", "aotwarm-bundle", __version__, str(here / {JIT_CACHE!r}), {tuple(archs)!r},
                     {tuple(modules)!r})]
'''


def engine_env(cache_dir: Path, manifest: dict) -> dict[str, str]:
    if not shipped(manifest):
        return {}
    env = {"PYTHONPATH": str(cache_dir / INSTALL_SUBDIR / PROVIDER)}
    if nested_shipped(manifest):
        env["TRTLLM_DG_CACHE_DIR"] = str(cache_dir / INSTALL_SUBDIR / NESTED)
    return env


def node_identity() -> dict:
    """This node's FlashInfer version, tvm-ffi version and CUDA runtime (None where not importable)."""
    out: dict = {}
    for key, module in (("flashinfer_version", "flashinfer"), ("tvm_ffi_version", "tvm_ffi")):
        try:
            from importlib.metadata import version

            out[key] = version({"flashinfer": "flashinfer-python", "tvm_ffi": "apache-tvm-ffi"}[module])
        except Exception:  # noqa: BLE001
            out[key] = None
    try:
        import torch

        out["cuda_runtime"] = torch.version.cuda
    except ImportError:
        out["cuda_runtime"] = None
    return out


def mismatches(manifest: dict, gpu: dict | None) -> list[Mismatch]:
    if not shipped(manifest):
        return []
    want, have = manifest[NAME]["identity"], node_identity()
    out = []
    if want.get("flashinfer_version") != have["flashinfer_version"]:
        out.append(Mismatch("FlashInfer version", str(want.get("flashinfer_version")), str(have["flashinfer_version"]),
                            "FlashInfer ignores AOT modules of another version: build with the node's FlashInfer"))
    if want.get("tvm_ffi_version") != have["tvm_ffi_version"]:
        out.append(Mismatch("tvm-ffi version", str(want.get("tvm_ffi_version")), str(have["tvm_ffi_version"]),
                            "FlashInfer modules are tvm-ffi libraries: build with the node's apache-tvm-ffi"))
    if gpu is not None and nested_shipped(manifest) and manifest[NAME][NESTED].get("num_sms") != gpu.get("num_sms"):
        out.append(Mismatch("TRT-LLM DeepGEMM SM count", str(manifest[NAME][NESTED].get("num_sms")),
                            str(gpu.get("num_sms")), "FlashInfer picks these cubins by the SM count: build them on "
                            "a GPU like this one"))
    major = lambda v: str(v).split(".")[0]  # noqa: E731 -- libcudart.so.<major>
    if major(want.get("cuda_runtime")) != major(have["cuda_runtime"]):
        out.append(Mismatch("CUDA runtime major", str(want.get("cuda_runtime")), str(have["cuda_runtime"]),
                            "the modules link libcudart of the build's CUDA major: build for the node's torch CUDA"))
    return out


def verify_section(plan, manifest: dict, cache_dir: Path, timeout: float) -> dict:
    """Load every planned module with FLASHINFER_DISABLE_JIT=1 through FlashInfer's own loader."""
    modules = _modules(plan)
    section = manifest.get(NAME) or {}
    if not modules or section.get("status") != "built":
        return {"status": section.get("status", "none"), "modules": len(modules), "loaded": [], "failed": []}
    env = {**merge_env(os.environ, engine_env(cache_dir, manifest)), "FLASHINFER_DISABLE_JIT": "1"}
    libraries = [str(cache_dir / INSTALL_SUBDIR / JIT_CACHE / m["name"] / f"{m['name']}.so") for m in modules]
    answer = _child("verify", {"modules": modules, "libraries": libraries}, env, timeout)
    if not answer["ok"]:
        return {"status": "verified", "modules": len(modules), "loaded": [], "failed": [answer["error"]]}
    inside = (cache_dir / INSTALL_SUBDIR).resolve()
    failed, elsewhere = list(answer["failed"]), []
    for m in answer["loaded"]:
        if not m["from"]:  # cannot happen with FLASHINFER_DISABLE_JIT=1, unless FlashInfer changed its rules
            failed.append(f"{m['name']}: loaded without an AOT artifact")
        elif not any(Path(p).resolve().is_relative_to(inside) for p in m["from"]):
            elsewhere.append(f"{m['name']}: {m['from'][0]}")  # the node's own AOT copy wins: nothing compiles
    report = {"status": "verified", "modules": len(modules), "loaded": [m["name"] for m in answer["loaded"]],
              "failed": failed, "loaded_elsewhere": elsewhere}
    if nested_shipped(manifest):
        report[NESTED] = _verify_nested(plan, env, cache_dir / INSTALL_SUBDIR / NESTED, timeout)
    return report


def _verify_nested(plan, env: dict, cache: Path, timeout: float) -> dict:
    """Every planned M of every shape against the installed cubins, nvcc replaced by a program that logs and
    fails: pass = no new cubin, no compiler run."""
    with tempfile.TemporaryDirectory(prefix="aotwarm-trtllm-dg-verify-") as tmp:
        log = Path(tmp) / "nvcc-calls.log"
        sentinel = Path(tmp) / "nvcc"
        sentinel.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\nexit 1\n")
        sentinel.chmod(sentinel.stat().st_mode | stat.S_IXUSR)
        answer = _nested_child(_nested_items(plan), cache, env, timeout, nvcc=str(sentinel))
        attempts = log.read_text().splitlines() if log.exists() else []
    if not answer["ok"]:
        return {"calls": 0, "new_cubins": 0, "compile_attempts": len(attempts), "failed": [answer["error"]]}
    return {"calls": answer["calls"], "new_cubins": len(answer["new"]), "compile_attempts": len(attempts),
            "failed": []}


def verify_failures(report: dict) -> list[str]:
    out = [f"FlashInfer module {f}" for f in report.get("failed", [])]
    nested = report.get(NESTED) or {}
    if nested.get("new_cubins") or nested.get("compile_attempts"):
        out.append(f"TRT-LLM DeepGEMM: {nested.get('new_cubins')} new cubin(s), {nested.get('compile_attempts')} "
                   f"nvcc run(s)")
    out.extend(f"TRT-LLM DeepGEMM: {f}" for f in nested.get("failed", []))
    return out
