"""Child process of the FlashInfer kind: ``python -m aotwarm.kinds.flashinfer_child build|verify REQUEST_JSON``.

Both modes get the modules as ``[{"name", "generator": "module:function"}]`` and call FlashInfer's own
generator to get each ``JitSpec`` (checked to carry the planned name).

* ``build``: ``flashinfer.jit.build_jit_specs`` (ninja + nvcc) for all of them at once, for the arch in
  ``FLASHINFER_CUDA_ARCH_LIST``, with the ``CUDA_HOME`` the parent assembled; answers each module's
  built ``.so`` path and FlashInfer's view of the target (its arch labels, its version, tvm-ffi's).
* ``verify``: with ``FLASHINFER_DISABLE_JIT=1`` set by the parent, each spec's ``build_and_load()`` --
  FlashInfer's own loader, which takes an AOT artifact or refuses to compile -- and where the loaded
  artifact came from.
* ``nested`` (a GPU of the target kind): FlashInfer's ``fp8_blockscale_gemm_sm90`` -- what vLLM's
  ``flashinfer_fp8_blockscale_gemm`` resolves to, called with the same arguments (bf16 activations, the FP8
  weight and its 128x128 block scales, bf16 out) -- for every item's shape at every M, against
  ``$TRTLLM_DG_CACHE_DIR``; answers the cubins the cache holds after, and which are new.

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


def nested(items: list[dict], cache: str) -> dict:
    from pathlib import Path

    import torch
    from flashinfer.gemm import fp8_blockscale_gemm_sm90

    def cubins() -> set[str]:
        root = Path(cache) / "cache"
        return {p.parent.name for p in root.glob("*/nvcc_kernel.cubin")} if root.is_dir() else set()

    before, calls = cubins(), 0
    torch.manual_seed(0)
    for item in items:
        n, k = item["n"], item["k"]
        weight = (torch.randn(n, k, device="cuda") * 0.1).to(torch.float8_e4m3fn)
        scale = torch.rand(n // 128, k // 128, device="cuda", dtype=torch.float32) + 0.5
        for m in range(item["m_first"], item["m_last"] + 1):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            fp8_blockscale_gemm_sm90(input=x, weight=weight, weight_scale=scale, out_dtype=torch.bfloat16)
            calls += 1
    torch.cuda.synchronize()
    after = cubins()
    return {"ok": True, "calls": calls, "cubins": sorted(after), "new": sorted(after - before),
            "num_sms": torch.cuda.get_device_properties(0).multi_processor_count}


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
        if mode == "build":
            answer = build(request["modules"])
        elif mode == "nested":
            answer = nested(request["items"], request["cache"])
        else:
            answer = verify(request["modules"])
    except Exception as err:  # noqa: BLE001 -- the parent reports it with the module names
        answer = {"ok": False, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"}
    proto.write(json.dumps(answer) + "\n")
    proto.flush()
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
