"""Run vLLM 0.33's GDN kernel functions at random serving shapes on the GPU; count Triton compiles.

Usage: python vllm_gdn_random_shapes.py PLAN_JSON CACHE_DIR SEED N_PREFILL
Prints one JSON line: {"calls": n, "compiles": n, "hits": n, "misses": [kernel names], "skipped": [...]}.

The plan gives the layer parameters and serving limits.  Prefill: N_PREFILL token counts drawn at
random in [1, max_num_batched_tokens], some behind random decode tokens (mixed batches), through
causal_conv1d_fn, fused_post_conv_prep, the chunk pipeline (only when the plan used the Triton
prefill backend; otherwise it is reported as skipped: FlashInfer) and RMSNormGated.  Decode: every
batch size the engine can present (every CUDA-graph capture size, then eager sizes up to
max_num_seqs) through causal_conv1d_update, the packed decode kernel and the sigmoid-gating update.
Must run in a fresh process: TRITON_CACHE_DIR is set before Triton is imported.
"""

import json
import random
import sys

plan_path, cache_dir, seed, n_prefill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import compile_events  # noqa: E402  (this folder is sys.path[0])

events = compile_events.watch(cache_dir)

import torch  # noqa: E402

from aotwarm.engines import vllm as engine  # noqa: E402
from aotwarm.plan import Plan, ServingArgs  # noqa: E402
from aotwarm.planners.gdn_vllm import decode_batches  # noqa: E402
from aotwarm.targets import Target  # noqa: E402

plan = Plan.read(plan_path)
serving = ServingArgs(**{**plan.serving, "families": tuple(plan.serving["families"])})
target = Target.from_dict(plan.target)
layer = {k: v for k, v in plan.items[0].params.items()
         if k in ("num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim", "conv_kernel", "dtype",
                  "conv_state_dtype", "ssm_state_dtype", "interleaved", "num_spec", "cache_blocks")}
norm = next(i.params for i in plan.items if i.op == "vllm.gdn_gated_rmsnorm")
triton_prefill = any(i.op == "vllm.gdn_chunk_prefill" for i in plan.items)
rng = random.Random(seed)
engine.import_kernels("cuda")
calls, skipped = 0, []
max_tokens, max_seqs = serving.max_num_batched_tokens, serving.max_num_seqs

for _ in range(n_prefill):
    t = rng.randint(1, max_tokens)
    d = rng.choice([0, 0, rng.randint(1, max(1, min(max_seqs, max_tokens - t)))]) if t < max_tokens else 0
    seqs = rng.randint(1, min(t, max_seqs))
    engine.gdn_conv_prefill({**layer, "tokens": t + d, "num_seqs": min(seqs + d, max_seqs)}, "cuda")
    engine.gdn_post_conv({**layer, "tokens": t, "decode_tokens": d}, "cuda")
    if triton_prefill:
        engine.gdn_chunk_prefill({**layer, "tokens": t, "num_seqs": seqs}, "cuda")
    else:
        skipped.append(f"chunk prefill at {t} tokens (FlashInfer backend)")
    engine.gdn_gated_rmsnorm({**norm, "tokens": t + d}, "cuda")
    if d:
        engine.gdn_sigmoid_gating_update({**layer, "batch": d}, "cuda")
    calls += 1

for b in decode_batches(serving, target):
    engine.gdn_conv_update({**layer, "batch": b}, "cuda")
    engine.gdn_packed_decode({**layer, "batch": b}, "cuda")
    engine.gdn_gated_rmsnorm({**norm, "tokens": b}, "cuda")
    calls += 1
if serving.num_speculative_tokens:
    for b in decode_batches(serving, target, query_len=serving.num_speculative_tokens + 1):
        engine.gdn_conv_update({**layer, "batch": b, "speculative": True}, "cuda")
        engine.gdn_sigmoid_gating_update({**layer, "batch": b, "speculative": True}, "cuda")
        calls += 1
torch.cuda.synchronize()
print(json.dumps({"calls": calls, **compile_events.summary(events), "skipped": len(skipped)}))
