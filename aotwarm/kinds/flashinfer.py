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
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .base import BuildContext, InstallContext, Mismatch, write_fresh

LABEL = "FlashInfer modules"  # how output names this kind's files
NAME = "flashinfer"
PREFIX = "flashinfer/"
INSTALL_SUBDIR = ".flashinfer"
JIT_CACHE = "jit_cache"
PROVIDER = "python"
_MEMBER = re.compile(r"^flashinfer/([a-z0-9_]{1,128})/\1\.so$")
# FlashInfer links every module with -lcuda.  The link stub a GPU-less builder has exports no driver symbol, so
# the linker's --as-needed (the toolchain default) would drop the dependency and a module calling the driver
# (fp8_blockscale_gemm_90: cuLibraryLoadData) would not load on the node (seen on the H200).  Keep it.
LINK_DRIVER = "-Wl,--no-as-needed -lcuda -Wl,--as-needed"


def member_ok(name: str) -> bool:
    return bool(_MEMBER.match(name))


def shipped(manifest: dict | None) -> bool:
    return bool(manifest) and (manifest.get(NAME) or {}).get("status") == "built"


def _modules(plan) -> list[dict]:
    return [{"name": i.params["name"], "generator": i.params["generator"]} for i in plan.items_of(NAME)]


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
    modules = _modules(ctx.plan)
    if not modules:
        return {"status": "none", "modules": []}, {}
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


def install_member(ctx: InstallContext, name: str, data: bytes) -> None:
    write_fresh(ctx.generation / INSTALL_SUBDIR / JIT_CACHE / name[len(PREFIX):], data)
    ctx.files += 1


def install_finish(ctx: InstallContext) -> None:
    """(Re)write the provider listing every module now in the generation (earlier installs' included)."""
    section = ctx.manifest.get(NAME) or {}
    if not shipped(ctx.manifest):
        return
    root = ctx.generation / INSTALL_SUBDIR
    names = sorted(p.name for p in (root / JIT_CACHE).iterdir() if (p / f"{p.name}.so").is_file())
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
    return {"PYTHONPATH": str(cache_dir / INSTALL_SUBDIR / PROVIDER)}


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
    env = {**os.environ, **engine_env(cache_dir, manifest), "FLASHINFER_DISABLE_JIT": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p)
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
    return {"status": "verified", "modules": len(modules), "loaded": [m["name"] for m in answer["loaded"]],
            "failed": failed, "loaded_elsewhere": elsewhere}


def verify_failures(report: dict) -> list[str]:
    return [f"FlashInfer module {f}" for f in report.get("failed", [])]
