"""The JIT keys of vLLM's own MoE layer objects over every token count -- independent of aotwarm's rebuild.

    python -m tests.independent.moe_layer_keys MODEL_DIR TARGET_JSON [-- VLLM_SERVE_ARGS...]

aotwarm plans the fused-MoE experts by recording the modular kernel vLLM built (``engines/vllm_codec``)
and rebuilding it in build workers (``engines/vllm_moe.Experts``).  This check does not go through that
record or rebuild: vLLM builds its engine config (``EngineArgs``) and the model (its loader, CUDA
allocations on ``meta``), runs ``process_weights_after_loading`` on each MoE layer, and the layer's own
quant method is called the way vLLM's MoE runner calls it (``quant_method.apply(layer, x, topk_weights,
topk_ids, ...)``), on meta tensors under the virtual GPU with a key-only recorder -- the layer's own
parameters, expert map, activation and kernel objects, nothing copied.

Prints one JSON line: for the first layer of each MoE kind, every token count 1..max_num_batched_tokens
grouped by the set of JIT keys it reaches ({first, last, count, keys as sha256[:16]}), the same grouping ``sweep`` reports.
Shared with aotwarm: the virtual device, vLLM's platform and process-group stand-ins, the key recorder
and the no-op kernels for vLLM's buffer-filling CUDA ops -- the node vLLM runs on, not the MoE record and
rebuild under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def _layer_groups(method, layer, max_tokens: int, observer) -> list[dict]:
    import torch

    top_k = layer.moe_config.experts_per_token if hasattr(layer, "moe_config") else layer.top_k
    hidden_dim = layer.moe_config.hidden_dim
    in_dtype = layer.moe_config.in_dtype
    groups: dict[tuple, dict] = {}
    for m in range(1, max_tokens + 1):
        x = torch.empty(m, hidden_dim, dtype=in_dtype, device="meta")
        topk_weights = torch.empty(m, top_k, dtype=torch.float32, device="meta")
        topk_ids = torch.empty(m, top_k, dtype=method.topk_indices_dtype or torch.int32, device="meta")
        method.apply(layer, x, topk_weights, topk_ids, None, None)
        keys = tuple(observer.take()["jit_keys"])
        g = groups.setdefault(keys, {"first": m, "last": m, "count": 0,
                                     "keys": [hashlib.sha256(k.encode()).hexdigest()[:16] for k in keys]})
        g["last"], g["count"] = m, g["count"] + 1
    return sorted(groups.values(), key=lambda g: g["first"])


def main(argv: list[str]) -> dict:
    model_dir, target_json = argv[0], argv[1]
    vllm_args = argv[3:] if len(argv) > 2 and argv[2] == "--" else []
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from aotwarm.device import VirtualDevice
    from aotwarm.engines.vllm_moe import register_void_op_noops
    from aotwarm.engines.vllm_node import load_compiled_ops, meta_allocations, process_groups, set_platform
    from aotwarm.observe import Observer
    from aotwarm.targets import Target

    load_compiled_ops()
    VirtualDevice(Target.from_dict(json.loads(target_json))).install()
    set_platform(8)

    import torch
    from vllm.config import set_current_vllm_config
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.utils.torch_utils import set_default_torch_dtype
    from vllm.v1.worker.workspace import init_workspace_manager, is_workspace_manager_initialized

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_args)  # vllm serve's own parser
    args.model = model_dir
    vc = AsyncEngineArgs.from_cli_args(args).create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    max_tokens = vc.scheduler_config.max_num_batched_tokens
    out: dict = {"max_tokens": max_tokens, "kinds": {}}
    with process_groups(vc), set_current_vllm_config(vc):
        with set_default_torch_dtype(vc.model_config.dtype), meta_allocations():
            model = get_model_loader(vc.load_config).create_model(vllm_config=vc, model_config=vc.model_config)
        register_void_op_noops("Meta")  # vLLM's buffer-filling CUDA ops: nothing to fill on meta
        if not is_workspace_manager_initialized():
            init_workspace_manager(torch.device("meta"))
        seen: set = set()
        observer = Observer(key_only=True).install()
        for name, layer in model.named_modules():
            method = getattr(layer, "quant_method", None)
            if not isinstance(method, FusedMoEMethodBase):
                continue
            sig = (type(method).__name__,
                   tuple((n, tuple(p.shape), str(p.dtype)) for n, p in sorted(layer.named_parameters(recurse=False))))
            if sig in seen:
                continue
            seen.add(sig)
            with meta_allocations():
                method.process_weights_after_loading(layer)
                out["kinds"][name] = {"experts": type(method.moe_kernel.fused_experts).__name__,
                                      "groups": _layer_groups(method, layer, max_tokens, observer)}
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result))
