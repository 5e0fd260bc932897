"""GPU: vLLM's MoE experts at random token counts, two ways; for ``aotwarm record`` against an installed bundle.

    python -m tests.independent.moe_runs modular PLAN_JSON SEED N
    python -m tests.independent.moe_runs functional CONFIG_JSON TP SEED N

* ``modular``: the ``FusedMoEKernel`` vLLM built for each MoE layer kind of the plan (its prepare/finalize
  and experts objects, rebuilt from the plan's record of them), called as the serving runner calls it.
* ``functional``: independent of aotwarm's planning code -- the per-rank expert shapes are computed here
  from the model's ``config.json`` (experts, top-k, hidden and MoE intermediate sizes / TP, the FP8 block
  from ``quantization_config``), routing is vLLM's ``fused_topk`` on random router logits, and the experts
  run through vLLM's functional ``fused_experts`` with vLLM's ``fp8_w8a8_moe_quant_config``.

Token counts: N drawn at random from 1..max_num_batched_tokens, plus 1 and the maximum.  Prints one JSON
line: calls, the token counts, and the compiles this process saw (the recorder counts them too).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path


def _token_counts(rng: random.Random, top: int, n: int) -> list[int]:
    return sorted({1, top, *(rng.randint(1, top) for _ in range(n))})


def modular(plan_path: str, seed: int, n: int) -> dict:
    from aotwarm.engines.vllm import _setup
    from aotwarm.engines.vllm_moe import Experts

    _setup("cuda")
    plan = json.loads(Path(plan_path).read_text())
    rng = random.Random(seed)
    out: dict = {"mode": "modular", "kinds": {}}
    started = time.perf_counter()
    for kind in plan["serving"]["vllm"]["moe"]:
        if "kernel" not in kind:
            continue
        experts = Experts(kind, "cuda")
        ms = _token_counts(rng, kind["max_tokens"], n)
        for i, m in enumerate(ms):
            experts.run(m, seed=seed + i)
        out["kinds"][kind["layer"]] = ms
    import torch

    torch.cuda.synchronize()
    out["seconds"] = round(time.perf_counter() - started, 3)  # every call, first calls included
    return out


def functional(config_path: str, tp: int, seed: int, n: int, max_tokens: int = 8192) -> dict:
    import torch
    from aotwarm.engines.vllm_platform import ensure_cuda_platform

    ensure_cuda_platform()
    from vllm.model_executor.layers.fused_moe.config import FUSED_MOE_UNQUANTIZED_CONFIG, fp8_w8a8_moe_quant_config
    from vllm.model_executor.layers.fused_moe.fused_moe import fused_experts
    from vllm.model_executor.layers.fused_moe.router.fused_topk_router import fused_topk
    from vllm.v1.worker.workspace import init_workspace_manager, is_workspace_manager_initialized

    if not is_workspace_manager_initialized():
        init_workspace_manager(torch.device("cuda"))
    cfg = json.loads(Path(config_path).read_text())
    cfg = cfg.get("text_config", cfg)
    e = cfg.get("num_experts") or cfg.get("n_routed_experts") or cfg["num_local_experts"]
    top_k, hidden = cfg["num_experts_per_tok"], cfg["hidden_size"]
    inter = cfg["moe_intermediate_size"] // tp
    q = cfg.get("quantization_config") or {}
    block = q.get("weight_block_size") if q.get("quant_method") == "fp8" else None
    dev = torch.device("cuda")
    if block:
        fp8 = torch.float8_e4m3fn
        w1 = (torch.randn(e, 2 * inter, hidden, device=dev) * 0.05).to(fp8)
        w2 = (torch.randn(e, hidden, inter, device=dev) * 0.05).to(fp8)
        bn, bk = block
        s1 = torch.full((e, -(-2 * inter // bn), -(-hidden // bk)), 1e-2, device=dev)
        s2 = torch.full((e, -(-hidden // bn), -(-inter // bk)), 1e-2, device=dev)
        quant = fp8_w8a8_moe_quant_config(w1_scale=s1, w2_scale=s2, block_shape=list(block))
    else:
        w1 = torch.randn(e, 2 * inter, hidden, device=dev, dtype=torch.bfloat16) * 0.05
        w2 = torch.randn(e, hidden, inter, device=dev, dtype=torch.bfloat16) * 0.05
        quant = FUSED_MOE_UNQUANTIZED_CONFIG
    rng = random.Random(seed)
    ms = _token_counts(rng, max_tokens, n)
    started = time.perf_counter()
    for m in ms:
        x = torch.randn(m, hidden, device=dev, dtype=torch.bfloat16)
        logits = torch.randn(m, e, device=dev, dtype=torch.float32)
        weights, ids, _ = fused_topk(x, logits, top_k, renormalize=True)
        fused_experts(x, w1, w2, weights, ids, quant_config=quant)
    torch.cuda.synchronize()
    return {"mode": "functional", "experts": e, "top_k": top_k, "w13": [e, 2 * inter, hidden], "block": block,
            "ms": ms, "seconds": round(time.perf_counter() - started, 3)}


def main(argv: list[str]) -> int:
    from aotwarm.observe import Observer

    observer = Observer().install()
    if argv[0] == "modular":
        out = modular(argv[1], int(argv[2]), int(argv[3]))
    else:
        out = functional(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    import torch

    torch.cuda.synchronize()
    seen = observer.take()["compiles"]
    out.update(compiles=sum(not c["cache_hit"] for c in seen), hits=sum(c["cache_hit"] for c in seen),
               missed=sorted({c["kernel"] for c in seen if not c["cache_hit"]}))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
