"""Child process of the FlashInfer kind: ``python -m aotwarm.kinds.flashinfer_child build|verify REQUEST_JSON``.

Both modes get the modules as ``[{"name", "generator": "module:function"}]`` and call FlashInfer's own
generator to get each ``JitSpec`` (checked to carry the planned name).

* ``build``: ``flashinfer.jit.build_jit_specs`` (ninja + nvcc) for all of them at once, for the arch in
  ``FLASHINFER_CUDA_ARCH_LIST``, with the ``CUDA_HOME`` the parent assembled; answers each module's
  built ``.so`` path and FlashInfer's view of the target (its arch labels, its version, tvm-ffi's).
* ``verify``: with ``FLASHINFER_DISABLE_JIT=1`` set by the parent, each spec's ``build_and_load()`` --
  FlashInfer's own loader, which takes an AOT artifact or refuses to compile -- and where the loaded
  artifact came from.

One JSON line on stdout is the answer; FlashInfer's and ninja's output goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any


def _spec(module: dict) -> Any:
    mod_name, _, fn_name = module["generator"].partition(":")
    spec = getattr(importlib.import_module(mod_name), fn_name)()
    if spec.name != module["name"]:
        raise RuntimeError(f"{module['generator']}() gives module {spec.name!r}, the plan names {module['name']!r}")
    return spec


def _identity() -> dict:
    import flashinfer
    import tvm_ffi
    from flashinfer.compilation_context import CompilationContext

    archs = sorted(f"sm{major}{minor}" for major, minor in CompilationContext().TARGET_CUDA_ARCHS)
    return {"flashinfer_version": flashinfer.__version__, "tvm_ffi_version": tvm_ffi.__version__,
            "cuda_architectures": archs}


def build(modules: list[dict]) -> dict:
    from flashinfer.jit import build_jit_specs

    start = time.monotonic()
    specs = [_spec(m) for m in modules]
    build_jit_specs(specs, verbose=False, skip_prebuilt=False)
    built = {s.name: str(s.jit_library_path) for s in specs}
    missing = [n for n, p in built.items() if not os.path.isfile(p)]
    if missing:
        raise RuntimeError(f"ninja finished but {missing[0]} has no library at {built[missing[0]]}")
    return {"ok": True, "built": built, "seconds": round(time.monotonic() - start, 1), "identity": _identity()}


def verify(modules: list[dict]) -> dict:
    from flashinfer.jit import env as jit_env

    loaded, failed = [], []
    for m in modules:
        try:
            artifacts = [str(a.path) for a in jit_env.get_aot_artifacts(m["name"])]
            _spec(m).build_and_load()
            loaded.append({"name": m["name"], "from": artifacts})
        except Exception as err:  # noqa: BLE001 -- reported per module
            failed.append(f"{m['name']}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    return {"ok": True, "loaded": loaded, "failed": failed, "identity": _identity()}


def main(argv: list[str]) -> int:
    mode, request = argv[0], json.loads(argv[1])
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # ninja's and FlashInfer's prints go to stderr
    try:
        if mode == "verify":
            from ..driverstub import load_stub_for
            from pathlib import Path

            # a GPU-less node (tests): the modules link libcuda.so.1, which the stand-in provides
            load_stub_for([Path(p) for p in request.get("libraries", [])])
        answer = build(request["modules"]) if mode == "build" else verify(request["modules"])
    except Exception as err:  # noqa: BLE001 -- the parent reports it with the module names
        answer = {"ok": False, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"}
    proto.write(json.dumps(answer) + "\n")
    proto.flush()
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
