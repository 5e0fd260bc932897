"""vLLM's fused MoE-LoRA, as its runner sets it up: what the resolution records, and the context a rebuild uses.

With ``--enable-lora`` vLLM's model runner wraps the model with its LoRA manager (``load_lora_model``:
``LRUCacheWorkerLoRAManager.create_lora_manager``): each MoE runner becomes a ``FusedMoEWithLoRA`` (or its 3D
variant), which allocates the stacked LoRA weights (``create_lora_weights``) and hands the experts object a
``MoELoRAContext`` with vLLM's ``PunicaWrapperGPU``; the experts' ``apply`` then launches vLLM's
``fused_moe_lora`` Triton kernels next to the base GEMMs (and may change the base path: routed weights are
applied differently with a LoRA context).

``lora_facts`` (resolution child, weights on ``meta``) runs exactly that on the model vLLM built and records,
per MoE layer kind, the LoRA layer class and the context's fields as data (``vllm_codec``: tensors as
geometry), plus vLLM's LoRA config and the punica wrapper's sizes.  ``attach`` (build worker, verify) builds
vLLM's punica wrapper and ``MoELoRAContext`` from that record and sets it on a rebuilt experts object;
``map_tokens`` lays out the punica metadata for M tokens with vLLM's own ``update_metadata`` (every token on
one adapter).  What the kernels key on -- M, rank, the number of LoRA slots, slices, TMA / PDL support, the
tuned config -- is vLLM's code deciding.
"""

from __future__ import annotations

from typing import Any

from .vllm_codec import decode, encode

# MoELoRAContext fields that are not configuration: the punica wrapper (rebuilt), per-pass state
NOT_RECORDED = ("punica_wrapper", "local_token_lora_mapping", "original_hidden_states")


def lora_facts(model: Any, vc: Any, kinds: list[dict]) -> None:
    """Wrap ``model`` with vLLM's LoRA manager and record each MoE kind's LoRA context in ``kind["lora"]`` (or
    why not in ``kind["lora_unbuilt"]``).  Changes ``model`` (LoRA layers replace vLLM's): call it last."""
    import torch
    from vllm.lora.layers.fused_moe import FusedMoEWithLoRA
    from vllm.lora.worker_manager import LRUCacheWorkerLoRAManager
    from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase

    from .vllm_node import meta_allocations

    try:
        with meta_allocations():
            # the runner loads LoRA after every layer's weights are processed (its MoE kernels built)
            for _, layer in model.named_modules():
                method = getattr(layer, "quant_method", None)
                if isinstance(method, FusedMoEMethodBase) and getattr(method, "moe_kernel", None) is None:
                    method.process_weights_after_loading(layer)
            manager = LRUCacheWorkerLoRAManager(vc, torch.device("cuda"), model.embedding_modules)
            wrapped = manager.create_lora_manager(model, vc)
    except Exception as err:  # noqa: BLE001 -- recorded: the plan states the LoRA kernels as not covered, with this
        for kind in kinds:
            kind["lora_unbuilt"] = f"vLLM's LoRA manager failed on meta weights: {type(err).__name__}: {err}"
        return
    wrappers = {name: mod for name, mod in wrapped.named_modules() if isinstance(mod, FusedMoEWithLoRA)}
    adapters = manager._adapter_manager
    for kind in kinds:
        if "unbuilt" in kind:
            kind["lora_unbuilt"] = "the experts themselves could not be built GPU-less (below)"
            continue
        wrapper = next((w for name, w in wrappers.items()
                        if kind["layer"] == name or kind["layer"].startswith(name + ".")), None)
        if wrapper is None:
            kind["lora_unbuilt"] = "vLLM's LoRA manager did not wrap this MoE layer"
            continue
        experts = wrapper._moe_kernel.fused_experts
        context = getattr(experts, "_lora_context", None)
        if context is None:
            kind["lora_unbuilt"] = f"{type(experts).__name__} got no LoRA context"
            continue
        if context.fully_sharded and context.tp_size > 1:
            kind["lora_unbuilt"] = (f"fully sharded LoRA all-reduces / all-gathers across the TP group of "
                                    f"{context.tp_size} between its shrink and expand kernels; aotwarm's build "
                                    f"workers hold no TP group, so these kernels are not planned")
            continue
        try:
            kind["lora"] = {
                "layer_class": f"{type(wrapper).__module__}:{type(wrapper).__qualname__}",
                "context": {name: encode(getattr(context, name)) for name in context.__dataclass_fields__
                            if name not in NOT_RECORDED},
                "lora_config": encode(vc.lora_config),
                "punica": {"max_num_batched_tokens": int(adapters.max_num_batched_tokens),
                           "max_batches": int(adapters.max_num_seqs), "vocab_size": int(adapters.vocab_size)},
            }
        except TypeError as err:
            kind["lora_unbuilt"] = f"the LoRA context holds state aotwarm cannot record: {err}"


class Attached:
    """vLLM's punica wrapper and LoRA context on a rebuilt experts object (``attach``)."""

    def __init__(self, lora: dict, experts: Any, prepare: Any, device: str):
        from vllm.lora.punica_wrapper.punica_selector import get_punica_wrapper
        from vllm.model_executor.layers.fused_moe.experts.lora_context import MoELoRAContext

        self.config = decode(lora["lora_config"], device)
        p = lora["punica"]
        self.vocab_size = p["vocab_size"]
        self.punica = get_punica_wrapper(p["max_num_batched_tokens"], max_batches=p["max_batches"], device=device,
                                         lora_config=self.config)
        fields = {name: decode(value, device) for name, value in lora["context"].items()}
        context = MoELoRAContext(punica_wrapper=self.punica, **fields)
        if device != "cpu":  # real adapters on the GPU: every slot enabled, small finite weights
            context.adapter_enabled.fill_(1)
            for stack in (context.w13_lora_a_stacked, context.w13_lora_b_stacked, context.w2_lora_a_stacked,
                          context.w2_lora_b_stacked):
                for t in stack:
                    t.normal_(0, 0.02)
        # what FusedMoEWithLoRA.set_mapping does with the context vLLM builds
        experts.set_lora_context(context)
        if hasattr(prepare, "set_lora_context"):
            prepare.set_lora_context(context)
        self.context = context

    def map_tokens(self, m: int) -> None:
        """vLLM's ``update_metadata`` for a batch of ``m`` tokens, all on the adapter in slot 0."""
        from vllm.lora.layers.utils import LoRAMapping

        max_loras = self.config.max_loras
        self.punica.update_metadata(LoRAMapping((1,) * m, (1,), is_prefill=m > 1), [1] + [None] * (max_loras - 1),
                                    max_loras, self.vocab_size)
