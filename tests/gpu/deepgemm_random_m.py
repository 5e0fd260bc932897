"""Run vLLM 0.33's DeepGEMM calls for every DeepGEMM shape of a plan at random M on the GPU.

Usage: python deepgemm_random_m.py PLAN_JSON DG_JIT_CACHE_DIR SEED N
Prints one JSON line: {"calls": n, "per_item": {...}, "new_kernels": n, "compiler_runs": n}.
nvcc is replaced by a sentinel that logs and fails any compile, so a missing kernel cannot build quietly.
"""

import json
import os
import random
import sys
import tempfile
from pathlib import Path

plan_path, cache_dir, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["DG_JIT_CACHE_DIR"] = cache_dir
from aotwarm.kinds.deepgemm import entries, sentinel_compiler  # noqa: E402
from aotwarm.engines import vllm_deepgemm  # noqa: E402
from aotwarm.plan import Plan  # noqa: E402

tmp = Path(tempfile.mkdtemp(prefix="dg-random-"))
compiler, log = sentinel_compiler(tmp)
os.environ["DG_JIT_NVCC_COMPILER"] = compiler
plan = Plan.read(plan_path)
rng = random.Random(seed)
before = entries(cache_dir)
per_item, calls = {}, 0
for item in plan.gpu_items:
    p = item.params
    steps = (p["m_last"] - p["m_first"]) // p["m_step"]
    ms = sorted(p["m_first"] + p["m_step"] * i for i in rng.sample(range(steps + 1), min(n, steps + 1)))
    vllm_deepgemm.SWEEPS[item.op](p, ms=ms)
    per_item[item.id] = ms
    calls += len(ms)
runs = log.read_text().splitlines() if log.exists() else []
print(json.dumps({"calls": calls, "per_item": per_item, "cached_kernels": len(before),
                  "new_kernels": len(entries(cache_dir) - before), "compiler_runs": len(runs)}))
