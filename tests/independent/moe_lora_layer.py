"""vLLM's MoE layers with LoRA, set up by vLLM's own LoRA manager and adapters -- independent of aotwarm's record.

    python -m tests.independent.moe_lora_layer keys MODEL_DIR TARGET_JSON -- VLLM_SERVE_ARGS...
    python -m tests.independent.moe_lora_layer run MODEL_DIR SEED N -- VLLM_SERVE_ARGS...        (on a GPU)

aotwarm plans the MoE-LoRA kernels from its record of the ``MoELoRAContext`` vLLM built on meta and a rebuild of
vLLM's punica wrapper and context in build workers (``engines/vllm_moe_lora.Attached``, which also lays out the
per-batch LoRA metadata itself).  This harness uses none of that.  vLLM builds everything as its worker does:

* the serving config from ``vllm serve`` arguments, the model from vLLM's loader (weights on ``meta``; the first
  MoE layer of each kind made real on the device), ``process_weights_after_loading`` on every MoE layer;
* ``LRUCacheWorkerLoRAManager.create_lora_manager`` wraps the model (``load_lora_model``), ``max_loras`` adapters
  are added as the runner's warm-up adds them (``add_dummy_lora`` at its warm-up rank; vLLM stacks every adapter
  at ``max_lora_rank``, so the kernels see the same shapes);
* per batch, a random composition of requests, each on one of the adapters or on none, goes through
  ``set_active_adapters`` with vLLM's ``LoRAMapping`` as ``_set_active_loras`` builds it (the manager activates
  the adapters and calls its punica wrapper's ``update_metadata``); routing is vLLM's ``fused_topk`` on router
  logits; the experts run through the layer's own ``RoutedExperts.forward_modular`` -- the call vLLM's MoE runner
  makes, with the LoRA context vLLM's ``FusedMoEWithLoRA.set_mapping`` installed.

``keys`` (CPU, virtual target, key-only): every token count 1..max_num_batched_tokens grouped by the JIT keys the
experts reach, the grouping the plan's sweep reports.  ``run`` (GPU): N random token counts (plus 1 and the
maximum), random activations, router logits and LoRA weights; prints the compiles and hits seen and the time of
the first call and of all calls.  Shared with aotwarm: the virtual device, the virtual node's plumbing (compiled
ops against a driver stand-in, process groups of the configured size, meta allocation while building the model,
no-op kernels for vLLM's buffer-filling CUDA ops on CPU tensors) and the key recorder -- not the LoRA record and
rebuild under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
import time
from typing import Any

from tests.independent.vllm_gdn_layer import engine_config


def _signature(layer: Any) -> tuple:
    return (type(layer.quant_method).__name__,
            tuple((n, tuple(p.shape), str(p.dtype)) for n, p in sorted(layer.named_parameters(recurse=False))))


def _fill(layer: Any, device: str) -> None:
    """Real tensors for one MoE layer: small random weights, positive scales (the values matter only on a GPU)."""
    import torch

    layer.to_empty(device=device)
    if device == "cpu":
        return
    gen = torch.Generator(device=device).manual_seed(0)
    for name, p in layer.named_parameters(recurse=False):
        if "scale" in name:
            p.data.fill_(0.01)
        elif "bias" in name:
            p.data.zero_()
        else:
            p.data.copy_(torch.randn(p.shape, generator=gen, device=device) * 0.5)


class LoRAExperts:
    """The first MoE layer of each kind of a model vLLM built, wrapped by vLLM's LoRA manager, on ``device``."""

    def __init__(self, model_dir: str, argv: list[str], device: str):
        import torch
        from vllm.config import set_current_vllm_config
        from vllm.lora.request import LoRARequest
        from vllm.lora.worker_manager import LRUCacheWorkerLoRAManager
        from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase
        from vllm.model_executor.model_loader import get_model_loader
        from vllm.utils.torch_utils import set_default_torch_dtype
        from vllm.v1.worker.workspace import init_workspace_manager, is_workspace_manager_initialized

        from aotwarm.engines.vllm_node import meta_allocations, no_pinned_memory, process_groups

        if device == "cpu":
            no_pinned_memory()  # no driver to pin host memory with (vLLM's LoRA modules read the flag)
        self.device = device
        self.vc = vc = engine_config(model_dir, argv)
        assert vc.lora_config is not None, "give the serving arguments --enable-lora"
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(process_groups(vc))
        self._stack.enter_context(set_current_vllm_config(vc))
        with set_default_torch_dtype(vc.model_config.dtype), meta_allocations():
            model = get_model_loader(vc.load_config).create_model(vllm_config=vc, model_config=vc.model_config)
        if not is_workspace_manager_initialized():
            init_workspace_manager(torch.device(device))
        self.layers: dict[str, Any] = {}
        seen: set = set()
        for name, layer in model.named_modules():
            if not isinstance(getattr(layer, "quant_method", None), FusedMoEMethodBase):
                continue
            sig = _signature(layer)
            if sig not in seen:  # the first layer of each kind is made real; the others stay on meta
                seen.add(sig)
                _fill(layer, device)
                self.layers[name] = layer
                layer.quant_method.process_weights_after_loading(layer)
            else:
                with meta_allocations():
                    layer.quant_method.process_weights_after_loading(layer)
        # the runner's load_lora_model, then its warm-up adapters (one per LoRA slot)
        self.manager = LRUCacheWorkerLoRAManager(vc, torch.device(device), model.embedding_modules)
        self.model = self.manager.create_lora_manager(model, vc)
        lc = vc.lora_config
        self.requests = [LoRARequest(lora_name=f"adapter_{i}", lora_int_id=i, lora_path="/not/a/real/path")
                         for i in range(1, lc.max_loras + 1)]
        rank = self.manager.get_dummy_lora_warmup_rank(min(lc.max_lora_rank, 8))  # the runner's warm-up rank
        for request in self.requests:
            self.manager.add_dummy_lora(request, rank=rank)
        self.experts = {name: type(layer.quant_method.moe_kernel.fused_experts).__name__
                        for name, layer in self.layers.items()}

    def randomize_adapters(self) -> None:
        """GPU: every adapter active once, then the LoRA weights of the layers under test made random."""
        from vllm.lora.layers.fused_moe import FusedMoEWithLoRA

        self.activate(self.batch(random.Random(0), len(self.requests) * 2, every_adapter=True))
        for module in self.model.modules():
            if isinstance(module, FusedMoEWithLoRA) and module.base_layer.routed_experts in self.layers.values():
                for stack in (module.w13_lora_a_stacked, module.w13_lora_b_stacked, module.w2_lora_a_stacked,
                              module.w2_lora_b_stacked):
                    for t in stack:
                        t.normal_(0, 0.02)

    def batch(self, rng: random.Random, m: int, every_adapter: bool = False) -> tuple[tuple, tuple]:
        """A batch of ``m`` tokens split into requests, each on an adapter or none: (token mapping, prompt mapping)."""
        token, prompt = [], []
        left, i = m, 0
        while left:
            n = min(left, rng.randint(1, max(1, m // 3)))
            adapter = (i % len(self.requests)) + 1 if every_adapter else rng.randint(0, len(self.requests))
            token += [adapter] * n
            prompt.append(adapter)
            left, i = left - n, i + 1
        return tuple(token), tuple(prompt)

    def activate(self, mapping: tuple[tuple, tuple]) -> None:
        """What the runner's ``_set_active_loras`` does for a batch."""
        from vllm.lora.layers.utils import LoRAMapping

        token, prompt = mapping
        used = {r for r in self.requests if r.lora_int_id in set(prompt)}
        self.manager.set_active_adapters(used, LoRAMapping(token, prompt, is_prefill=True))

    def forward(self, name: str, m: int, gen: Any = None) -> Any:
        """The experts of layer ``name`` for ``m`` tokens, routed by vLLM's ``fused_topk`` on router logits."""
        import torch
        from vllm.model_executor.layers.fused_moe.router.fused_topk_router import fused_topk

        layer = self.layers[name]
        moe = layer.moe_config
        x = torch.empty(m, moe.hidden_dim, dtype=moe.in_dtype, device=self.device)
        logits = torch.empty(m, moe.num_experts, dtype=torch.float32, device=self.device)
        if gen is not None:
            x.normal_(0, 1, generator=gen)
            logits.normal_(0, 1, generator=gen)
        topk_weights, topk_ids, _ = fused_topk(x, logits, moe.experts_per_token, renormalize=True,
                                               indices_type=layer.quant_method.topk_indices_dtype)
        return layer.forward_modular(x, topk_weights, topk_ids)

    def close(self) -> None:
        self._stack.close()


def keys(model_dir: str, target_json: str, argv: list[str]) -> dict:
    from aotwarm.device import VirtualDevice
    from aotwarm.engines.vllm_moe import register_void_op_noops
    from aotwarm.engines.vllm_node import load_compiled_ops, set_platform
    from aotwarm.observe import Observer
    from aotwarm.targets import Target

    load_compiled_ops()
    VirtualDevice(Target.from_dict(json.loads(target_json))).install()
    set_platform(8)
    register_void_op_noops("CPU")  # vLLM's buffer-filling CUDA ops on the CPU tensors of the virtual GPU
    harness = LoRAExperts(model_dir, argv, "cpu")
    max_tokens = harness.vc.scheduler_config.max_num_batched_tokens
    observer = Observer(key_only=True).install()
    out: dict = {"max_tokens": max_tokens, "kinds": {}}
    rng = random.Random(0)
    for name in harness.layers:
        groups: dict[tuple, dict] = {}
        for m in range(1, max_tokens + 1):
            harness.activate(harness.batch(rng, m))
            observer.take()  # routing and metadata are not the experts'
            harness.forward(name, m)
            found = tuple(observer.take()["jit_keys"])
            g = groups.setdefault(found, {"first": m, "last": m, "count": 0,
                                          "keys": [hashlib.sha256(k.encode()).hexdigest()[:16] for k in found]})
            g["last"], g["count"] = m, g["count"] + 1
        out["kinds"][name] = {"experts": harness.experts[name],
                              "groups": sorted(groups.values(), key=lambda g: g["first"])}
    harness.close()
    return out


def _node_of(gpus: int) -> None:
    """The test GPU machine has one GPU; vLLM's own CUDA platform is told the node has ``gpus`` so that its config
    accepts the plan's tensor-parallel size (this process is rank 0; its process groups answer with that size)."""
    from vllm.platforms import current_platform

    real = type(current_platform).device_count
    type(current_platform).device_count = classmethod(lambda cls: max(gpus, real()))


def run_gpu(model_dir: str, seed: int, n: int, argv: list[str]) -> dict:
    import torch

    from aotwarm.engines.vllm_node import load_compiled_ops
    from aotwarm.observe import Observer

    load_compiled_ops()
    _node_of(8)
    harness = LoRAExperts(model_dir, argv, "cuda")
    harness.randomize_adapters()
    torch.cuda.synchronize()
    max_tokens = harness.vc.scheduler_config.max_num_batched_tokens
    observer = Observer().install()
    observer.take()
    rng = random.Random(seed)
    ms = sorted({1, max_tokens, *(rng.randint(1, max_tokens) for _ in range(n))})
    rng.shuffle(ms)
    out: dict = {"mode": "run", "ms": ms, "kinds": {}}
    for name in harness.layers:
        times, finite, adapters_used = [], 0, set()
        for i, m in enumerate(ms):
            mapping = harness.batch(rng, m)
            adapters_used |= set(mapping[1])
            started = time.perf_counter()
            harness.activate(mapping)
            y = harness.forward(name, m, torch.Generator(device="cuda").manual_seed(seed + i))
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            finite += bool(torch.isfinite(y).all())
        seen = observer.take()["compiles"]
        out["kinds"][name] = {"experts": harness.experts[name], "first_call_s": round(times[0], 3),
                              "all_calls_s": round(sum(times), 3), "finite_outputs": finite,
                              "adapters_used": sorted(adapters_used),
                              "compiles": sum(not c["cache_hit"] for c in seen),
                              "hits": sum(c["cache_hit"] for c in seen),
                              "missed": sorted({c["kernel"] for c in seen if not c["cache_hit"]}),
                              "kernels": sorted({c["kernel"] for c in seen})}
    harness.close()
    return out


def main(argv: list[str]) -> int:
    split = argv.index("--")
    head, serve = argv[:split], argv[split + 1:]
    if head[0] == "keys":
        out = keys(head[1], head[2], serve)
    else:
        out = run_gpu(head[1], int(head[2]), int(head[3]), serve)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
