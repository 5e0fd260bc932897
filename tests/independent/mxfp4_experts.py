"""vLLM's MXFP4 experts (gpt-oss on sm90) built from ``config.json`` with vLLM's own weight conversion --
independent of aotwarm's record of the layer and its rebuild.

    python -m tests.independent.mxfp4_experts keys CONFIG_JSON TP TARGET_JSON MAX_TOKENS
    python -m tests.independent.mxfp4_experts run CONFIG_JSON TP SEED N MAX_TOKENS     (on a GPU)

aotwarm plans the MXFP4 experts from the kernel object vLLM built in the resolution (weights swizzled on
``meta``, recorded as data with their ``triton_kernels`` layouts, rebuilt in build workers).  This harness
goes another way: the per-rank checkpoint shapes come from ``config.json`` here (experts, top-k, hidden and
intermediate sizes / TP), rounded by vLLM's ``mxfp4_round_up_hidden_size_and_intermediate_size``; the
checkpoint-format tensors go through vLLM's ``convert_gpt_oss_weight_to_mxfp4_moe_kernel_format`` (its
shuffle and ``triton_kernels`` swizzle) and ``make_mxfp4_moe_quant_config``; the experts run through
``triton_kernel_moe_forward``, the function ``OAITritonMxfp4ExpertsMonolithic.apply`` calls, routing the
router's logits with ``triton_kernels``' own top-k and routing kernels.

``keys``: on the virtual target, key-only, every M in 1..MAX_TOKENS grouped by the JIT keys it reaches (the
grouping the plan's sweep reports).  ``run``: on the GPU, N random M (plus 1 and MAX_TOKENS) with random
activations and router logits (real routing); prints the token counts, the compiles seen and the time of the
first call and of all calls.  Shared with aotwarm: the virtual device, vLLM's platform stand-in and the key
recorder -- the node vLLM runs on, not the MoE record and rebuild under test.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from pathlib import Path


def experts(config_path: str, tp: int, device: str):
    """vLLM's MXFP4 (Triton backend) experts for one rank: a function of (M, seed) that runs them."""
    import torch
    from vllm.model_executor.layers.fused_moe.experts.gpt_oss_triton_kernels_moe import triton_kernel_moe_forward
    from vllm.model_executor.layers.fused_moe.oracle.mxfp4 import (
        Mxfp4MoeBackend, convert_gpt_oss_weight_to_mxfp4_moe_kernel_format, make_mxfp4_moe_quant_config,
        mxfp4_round_up_hidden_size_and_intermediate_size)

    cfg = json.loads(Path(config_path).read_text())
    cfg = cfg.get("text_config", cfg)
    e, top_k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    backend = Mxfp4MoeBackend.TRITON
    hidden, inter = mxfp4_round_up_hidden_size_and_intermediate_size(backend, cfg["hidden_size"],
                                                                     cfg["intermediate_size"] // tp)
    gen = torch.Generator(device=device).manual_seed(0)

    def packed(*shape):  # MXFP4 values, two per byte
        t = torch.empty(*shape, dtype=torch.uint8, device=device)
        return t if device == "cpu" else t.random_(0, 256, generator=gen)

    def scales(*shape):  # e8m0 block scales near 2**-6
        t = torch.empty(*shape, dtype=torch.uint8, device=device)
        return t if device == "cpu" else t.random_(118, 124, generator=gen)

    layer = torch.nn.Module()
    tensors = {"w13_weight": packed(e, 2 * inter, hidden // 2), "w2_weight": packed(e, hidden, inter // 2),
               "w13_weight_scale": scales(e, 2 * inter, hidden // 32), "w2_weight_scale": scales(e, hidden, inter // 32),
               "w13_bias": torch.zeros(e, 2 * inter, dtype=torch.bfloat16, device=device),
               "w2_bias": torch.zeros(e, hidden, dtype=torch.bfloat16, device=device)}
    for name, t in tensors.items():
        setattr(layer, name, torch.nn.Parameter(t, requires_grad=False))
    w13, w2, pc13, pc2, b13, b2 = convert_gpt_oss_weight_to_mxfp4_moe_kernel_format(
        mxfp4_backend=backend, layer=layer, w13_weight=tensors["w13_weight"], w2_weight=tensors["w2_weight"],
        w13_weight_scale=tensors["w13_weight_scale"], w2_weight_scale=tensors["w2_weight_scale"],
        w13_bias=tensors["w13_bias"], w2_bias=tensors["w2_bias"], _cache_permute_indices={})
    quant = make_mxfp4_moe_quant_config(mxfp4_backend=backend, w1_scale=pc13, w2_scale=pc2, gemm1_alpha=1.702,
                                        gemm1_beta=1.0, swiglu_limit=7.0, w1_bias=b13, w2_bias=b2, layer=layer)

    def run(m: int, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.empty(m, hidden, dtype=torch.bfloat16, device=device)
        logits = torch.empty(m, e, dtype=torch.bfloat16, device=device)
        if device != "cpu":
            x.normal_(0, 1, generator=g)
            logits.normal_(0, 1, generator=g)
        return triton_kernel_moe_forward(hidden_states=x, w1=w13, w2=w2, gating_output=logits, topk=top_k,
                                         renormalize=True, quant_config=quant, global_num_experts=e)

    run.shape = {"experts": e, "top_k": top_k, "hidden": hidden, "intermediate": inter}
    return run


def keys(config_path: str, tp: int, target_json: str, max_tokens: int) -> dict:
    from aotwarm.device import VirtualDevice
    from aotwarm.engines.vllm_node import load_compiled_ops, set_platform
    from aotwarm.observe import Observer
    from aotwarm.targets import Target

    load_compiled_ops()
    VirtualDevice(Target.from_dict(json.loads(target_json))).install()
    set_platform(8)
    run = experts(config_path, tp, "cpu")
    observer = Observer(key_only=True).install()
    observer.take()  # the conversion's own launches (if any) are not the experts'
    groups: dict[tuple, dict] = {}
    for m in range(1, max_tokens + 1):
        run(m)
        found = tuple(observer.take()["jit_keys"])
        g = groups.setdefault(found, {"first": m, "last": m, "count": 0,
                                      "keys": [hashlib.sha256(k.encode()).hexdigest()[:16] for k in found]})
        g["last"], g["count"] = m, g["count"] + 1
    return {"shape": run.shape, "groups": sorted(groups.values(), key=lambda g: g["first"])}


def run_gpu(config_path: str, tp: int, seed: int, n: int, max_tokens: int) -> dict:
    import torch
    from aotwarm.engines.vllm_platform import ensure_cuda_platform
    from aotwarm.observe import Observer

    ensure_cuda_platform()
    run = experts(config_path, tp, "cuda")
    torch.cuda.synchronize()
    observer = Observer().install()
    rng = random.Random(seed)
    ms = sorted({1, max_tokens, *(rng.randint(1, max_tokens) for _ in range(n))})
    rng.shuffle(ms)
    times = []
    finite = 0
    for i, m in enumerate(ms):
        started = time.perf_counter()
        out = run(m, seed + i)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        finite += bool(torch.isfinite(out).all())
    seen = observer.take()["compiles"]
    return {"mode": "run", "shape": run.shape, "ms": ms, "first_call_s": round(times[0], 3),
            "all_calls_s": round(sum(times), 3), "finite_outputs": finite,
            "compiles": sum(not c["cache_hit"] for c in seen), "hits": sum(c["cache_hit"] for c in seen),
            "missed": sorted({c["kernel"] for c in seen if not c["cache_hit"]})}


def main(argv: list[str]) -> int:
    if argv[0] == "keys":
        out = keys(argv[1], int(argv[2]), argv[3], int(argv[4]))
    else:
        out = run_gpu(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
