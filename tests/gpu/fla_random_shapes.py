"""Run fla-core's GDN entry points directly (not through aotwarm) at random shapes; count compiles.

Usage: python fla_random_shapes.py CACHE_DIR SEED N_TOKENS MAX_TOKENS MAX_SEQS HV K V
Prints one JSON line: {"calls": [...], "compiles": n, "hits": n, "misses": [...]}.
Must run in a fresh process with TRITON_CACHE_DIR set before Triton is imported.
"""

import json
import random
import sys

cache_dir, seed, n, max_tokens, max_seqs, hv, dk, dv = sys.argv[1], *map(int, sys.argv[2:])
import compile_events  # noqa: E402  (this folder is sys.path[0])

events = compile_events.watch(cache_dir)

import torch  # noqa: E402

from fla.modules.fused_norm_gate import rms_norm_gated  # noqa: E402
from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule  # noqa: E402

rng = random.Random(seed)
dev, bf = "cuda", torch.bfloat16
calls = []


def qkvgb(b, t):
    q = torch.randn(b, t, hv, dk, device=dev, dtype=bf)
    k = torch.randn(b, t, hv, dk, device=dev, dtype=bf)
    v = torch.randn(b, t, hv, dv, device=dev, dtype=bf)
    g = torch.nn.functional.logsigmoid(torch.randn(b, t, hv, device=dev))
    beta = torch.rand(b, t, hv, device=dev, dtype=bf)
    return q, k, v, g, beta


token_counts = sorted(rng.sample(range(1, max_tokens + 1), n))
for t in token_counts:
    q, k, v, g, beta = qkvgb(1, t)
    h0 = torch.zeros(1, hv, dk, dv, device=dev) if rng.random() < 0.3 else None
    o, ht = chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True,
                                   use_qk_l2norm_in_kernel=True)
    seqs = rng.randint(1, min(t, max_seqs))
    cu = torch.linspace(0, t, seqs + 1).round().to(torch.int32).to(dev)
    chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=None, output_final_state=True,
                           use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    x = o.reshape(-1, dv)
    rms_norm_gated(x, torch.randn_like(x), torch.ones(dv, device=dev, dtype=bf), None, activation="silu", eps=1e-6)
    calls.append({"tokens": t, "initial_state": h0 is not None, "packed_seqs": seqs})
for b in sorted(rng.sample(range(1, max_seqs + 1), min(n, max_seqs))):
    q, k, v, g, beta = qkvgb(b, 1)
    fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=torch.zeros(b, hv, dk, dv, device=dev),
                                     output_final_state=True, use_qk_l2norm_in_kernel=True)
    calls.append({"decode_batch": b})
torch.cuda.synchronize()
print(json.dumps({"calls": calls, **compile_events.summary(events)}))
