"""On the GPU machine: DeepGEMM bundles of whole models (plans made on the serving stack and carried), one step
per call so each stays within the machine's per-command limit.

    python -m tests.gpu.record_deepgemm_models build  PLAN WORK      # built with the GPU visible, installed
    python -m tests.gpu.record_deepgemm_models record PLAN WORK OUT  # `aotwarm record` of vLLM's DeepGEMM calls

``build``: DeepGEMM's JIT needs a GPU of the target kind, so the plan is built with it visible (-j 16), then
installed into WORK/<plan>/node (another directory than the build's).  ``record``: vLLM's DeepGEMM wrappers for
every planned (N, K) at 20 random M each, against the installed bundle, nvcc replaced by a sentinel
(``deepgemm_random_m.py``) -> new DeepGEMM kernels and compiler runs expected: 0.  One JSON line each.
"""

import json
import sys
import time
from pathlib import Path

from tests.gpu.record_loop import build_install
from tests.gpu.record_moe_deepgemm import record


def build(plan: Path, work: Path) -> dict:
    started = time.time()
    summary = build_install(plan, work / "dg.tar.zst", work / "node", "-j", "16", gpu=True)
    return {"seconds": round(time.time() - started, 1), **summary}


def main(argv: list[str]) -> int:
    step, plan = argv[0], Path(argv[1])
    work = Path(argv[2]) / plan.name.removesuffix(".plan.json")
    work.mkdir(parents=True, exist_ok=True)
    if step == "build":
        result = build(plan, work)
    else:
        out = Path(argv[3])
        out.mkdir(parents=True, exist_ok=True)
        name = plan.name.removesuffix(".plan.json")
        result = record(out, name, work / "dg.tar.zst", work / "node",
                        str(Path(__file__).with_name("deepgemm_random_m.py")), str(plan),
                        str(work / "node" / "triton" / ".deep_gemm"), "2026", "20")
    print(json.dumps({"step": step, "plan": plan.name, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
