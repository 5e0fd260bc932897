"""Run vLLM 0.33's WNA16 MoE entry point (both GEMMs) and the shared-expert gate at random M on the GPU.

Usage: python moe_random_m.py PLAN_JSON CACHE_DIR SEED N
Prints one JSON line: {"calls": n, "compiles": n, "hits": n, "misses": [...], "ms": [...]}.
Needs tests/vllm_shims on PYTHONPATH where vLLM's compiled extensions cannot load.
"""

import json
import random
import sys

plan_path, cache_dir, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import compile_events  # noqa: E402  (this folder is sys.path[0])

events = compile_events.watch(cache_dir)

import torch  # noqa: E402

from aotwarm.engines import vllm as engine  # noqa: E402
from aotwarm.plan import Plan  # noqa: E402

plan = Plan.read(plan_path)
max_tokens = plan.serving["max_num_batched_tokens"]
rng = random.Random(seed)
ms = sorted({rng.randint(1, max_tokens) for _ in range(n)} | {1, 2, 3})
calls = 0
for m in ms:
    for item in plan.items:
        engine.OPS[item.op.split(".", 1)[1]]({**item.params, "tokens": m}, "cuda")
        calls += 1
torch.cuda.synchronize()
print(json.dumps({"calls": calls, "ms": ms, **compile_events.summary(events)}))
