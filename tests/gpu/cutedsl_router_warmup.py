"""vLLM's CuTe DSL router GEMM warm-up on the GPU: what every process pays, since nothing of it is kept.

    python -m tests.gpu.cutedsl_router_warmup OUT_JSON

vLLM 0.33's ``kernel_warmup._warmup_ll_bf16_router_gemm`` calls ``ll_bf16_gemm_kernel.warmup(shapes,
m_values=range(1, 17))`` for every bf16 ``GateLinear`` (K = hidden, N = experts); ``cute.compile`` keeps the
result in process memory only.  Each shape set runs in a fresh child (a serving process), twice in it (the
second shows the in-memory hit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import json, sys, time, torch
from vllm.model_executor.kernels.linear.cute_dsl.ll_bf16 import is_available, ll_bf16_gemm_kernel
shapes = tuple(tuple(s) for s in json.loads(sys.argv[1]))
out = {"shapes": shapes, "available": bool(is_available())}
if out["available"]:
    for label in ("first", "again"):
        s = time.monotonic()
        ll_bf16_gemm_kernel.warmup(shapes=shapes, m_values=range(1, 17))
        torch.cuda.synchronize()
        out[f"{label}_s"] = round(time.monotonic() - s, 3)
out["ok"] = True
print(json.dumps(out))
'''

# (K = hidden, N = routed experts) of the bf16 router GEMMs vLLM warms for these models
MODELS = {"Qwen3.5-35B-A3B": [[2048, 256]], "Qwen3-30B-A3B": [[2048, 128]], "DeepSeek-V3": [[7168, 256]]}


def main(out_path: str) -> int:
    report = {}
    for model, shapes in MODELS.items():
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(shapes)], capture_output=True, text=True,
                              timeout=300)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        report[model] = json.loads(lines[-1]) if lines else {"ok": False, "stderr": proc.stderr[-2000:]}
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1)[:5000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
