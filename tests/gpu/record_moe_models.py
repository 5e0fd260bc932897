"""On the GPU machine: the fused-moe bundles of several MoE models (plans made on the serving stack and carried),
each built GPU-less, installed elsewhere and recorded through vLLM's MoE two ways (``tests/independent/moe_runs.py``:
vLLM's modular kernel from the plan, and vLLM's functional ``fused_experts`` with shapes from config.json) at
>= 40 random token counts; for the first model also the same modular run against an empty Triton cache (first-call
time, empty vs bundle).

    python -m tests.gpu.record_moe_models OUT_DIR PLAN CONFIG TP [PLAN CONFIG TP ...]
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.gpu.record_loop import build_install
from tests.gpu.record_moe_deepgemm import record


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="moe-models-"))
    result: dict = {}
    for n, (plan, config, tp) in enumerate(zip(argv[1::3], argv[2::3], argv[3::3])):
        name = Path(plan).name.removesuffix(".plan.json")
        bundle, dest = work / f"{name}.tar.zst", work / name
        r: dict = {"build": build_install(Path(plan), bundle, dest)}
        r["modular"] = record(out, f"{name}-modular", bundle, dest, "-m", "tests.independent.moe_runs", "modular",
                              plan, "2026", "40")
        r["functional"] = record(out, f"{name}-functional", bundle, dest, "-m", "tests.independent.moe_runs",
                                 "functional", config, tp, "2027", "40")
        if n == 0:  # first-call time: the same modular run against an empty cache, in a fresh process
            empty = work / "empty-cache"
            proc = subprocess.run([sys.executable, "-m", "tests.independent.moe_runs", "modular", plan, "2026", "40"],
                                  capture_output=True, text=True,
                                  env={**os.environ, "TRITON_CACHE_DIR": str(empty)})
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"')]
            r["empty_cache"] = json.loads(lines[-1]) if lines else {"rc": proc.returncode, "err": proc.stderr[-2000:]}
        result[name] = r
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
