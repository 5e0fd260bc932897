"""GDN prefill on the GPU: FlashInfer's CuTe DSL kernel (compiled in memory in every process, nothing to ship)
against vLLM's Triton/FLA chunk prefill (fully bundled) -- first call and steady state, one run.

    python -m tests.gpu.gdn_prefill_backends OUT_JSON

Each measurement is a fresh child process, as a serving process would be:

* ``flashinfer`` (twice, the second with vLLM's Triton l2norm on disk): vLLM's ``fi_chunk_gated_delta_rule`` (what ``ChunkGatedDeltaRule.forward_cuda`` calls) with
  Qwen3.5-9B's per-rank shapes (16 QK heads, 32 V heads, head dim 128) -- the first call pays FlashInfer's
  CuTe DSL compile; then the ``use_cp=False`` variant vLLM's warm-up also compiles; then steady-state times;
* ``triton-cold``: vLLM's ``fla_chunk_gated_delta_rule`` (``forward_native``, the ``--gdn-prefill-backend
  triton`` path) with an empty Triton cache -- first call pays JIT and autotuning;
* ``triton-warm``: the same in a new process on the cache the cold run left (what an installed bundle with
  autotune results gives: disk hits, no benchmarking).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, os, sys, time, torch
which = sys.argv[1]
T_LIST = [64, 1024, 8192]
HK, HV, D = 16, 32, 128
dev = "cuda"
torch.manual_seed(0)

def inputs(t):
    q = torch.randn(1, t, HK, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, t, HK, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, t, HV, D, device=dev, dtype=torch.bfloat16)
    g = -torch.rand(1, t, HV, device=dev, dtype=torch.float32) * 0.1
    beta = torch.rand(1, t, HV, device=dev, dtype=torch.bfloat16).sigmoid()
    h0 = torch.zeros(1, HV, D, D, device=dev, dtype=torch.float32)
    cu = torch.tensor([0, t], device=dev, dtype=torch.int32)
    return q, k, v, g, beta, h0, cu

if which == "flashinfer":
    # the body of vLLM's fi_chunk_gated_delta_rule (its module imports compressed-tensors, absent on this
    # machine): vLLM's l2norm, then FlashInfer's chunk_gated_delta_rule with the arguments vLLM passes
    from flashinfer.gdn_prefill import chunk_gated_delta_rule as fi
    from vllm.third_party.flash_linear_attention.ops.chunk import l2norm_fwd
    def call(t, use_cp="auto"):
        q, k, v, g, beta, h0, cu = inputs(t)
        q, k = l2norm_fwd(q), l2norm_fwd(k)
        return fi(q=q.squeeze(0).contiguous(), k=k.squeeze(0).contiguous(), v=v.squeeze(0).contiguous(),
                  g=torch.exp(g.squeeze(0).contiguous().float()), beta=beta.squeeze(0).contiguous().float(),
                  initial_state=h0.float(), output_final_state=True, cu_seqlens=cu.to(torch.int64),
                  state_checkpoints=None, checkpoint_cu_starts=None, checkpoint_every_n_tokens=0, use_cp=use_cp,
                  backend="flashinfer")
else:
    from vllm.third_party.flash_linear_attention.ops import chunk_gated_delta_rule as fn
    def call(t, **kw):
        q, k, v, g, beta, h0, cu = inputs(t)
        return fn(q=q, k=k, v=v, g=g.to(torch.float32), beta=beta, initial_state=h0, output_final_state=True,
                  cu_seqlens=cu, use_qk_l2norm_in_kernel=True)

out = {"which": which}
s = time.monotonic(); call(64); torch.cuda.synchronize(); out["first_call_s"] = round(time.monotonic() - s, 3)
s = time.monotonic(); call(64); torch.cuda.synchronize(); out["second_call_s"] = round(time.monotonic() - s, 4)
if which == "flashinfer":
    s = time.monotonic(); call(64, use_cp=False); torch.cuda.synchronize()
    out["first_call_use_cp_false_s"] = round(time.monotonic() - s, 3)
firsts, steady = {}, {}
for t in T_LIST:
    s = time.monotonic(); call(t); torch.cuda.synchronize(); firsts[t] = round(time.monotonic() - s, 3)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); call(t); b.record(); torch.cuda.synchronize(); times.append(a.elapsed_time(b))
    steady[t] = round(sorted(times)[2], 3)
out["first_call_at_T_s"] = firsts
out["steady_ms_at_T"] = steady
out["ok"] = True
print(json.dumps(out))
'''


def run(which: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, which], capture_output=True, text=True, env=env, timeout=500)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"ok": False, "rc": proc.returncode, "stderr": proc.stderr[-2500:]}


def main(out_path: str) -> int:
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="aotwarm-gdn-prefill-") as tmp:
        base = {**os.environ, "TRITON_CACHE_DIR": str(Path(tmp) / "triton"), "TRITON_CACHE_AUTOTUNING": "1"}
        if not os.environ.get("AOTWARM_SKIP_TRITON"):
            report["triton_cold"] = run("triton", base)
            report["triton_warm"] = run("triton", base)
        # twice: the second process finds vLLM's Triton l2norm kernel on disk, so its first call is the CuTe DSL
        # compile alone (which no process can keep)
        fi_env = {**base, "TRITON_CACHE_DIR": str(Path(tmp) / "triton-fi")}
        report["flashinfer"] = run("flashinfer", fi_env)
        report["flashinfer_second_process"] = run("flashinfer", fi_env)
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
