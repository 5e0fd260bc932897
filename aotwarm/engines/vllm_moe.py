"""vLLM's fused-MoE experts exactly as vLLM builds them: what the resolution records, the token sweep, the op.

In the resolution child (``vllm_resolve``) every MoE layer of the model vLLM built (on ``meta``) goes
through vLLM's own ``process_weights_after_loading``: the quant method's oracle has already chosen the
backend and experts class, and this builds the modular kernel (``FusedMoEKernel``: vLLM's
prepare/finalize + experts object) the serving runner calls.  ``moe_facts`` records that kernel as data
(``vllm_codec``: the experts class, its ``FusedMoEConfig`` and ``FusedMoEQuantConfig``) with the
layer's weight layout and the arguments the runner passes (``UnquantizedFusedMoEMethod.forward_native``
and its FP8/INT8 siblings: ``w13_weight``, ``w2_weight``, ``activation``, ``global_num_experts``,
``expert_map``, ``apply_router_weight_on_input``; routing indices of the method's
``topk_indices_dtype``).

``run_experts`` rebuilds that kernel and calls its ``apply`` for M tokens -- vLLM's code decides the
tuned config (by device name, E, N, dtype, block shape), naive block assignment, the alignment buffers,
SWAP_AB, activation quantization, every launch.  On CPU tensors under the virtual GPU every Triton launch
is a compile (or, key-only, a key); vLLM's CUDA ops (``moe_align_block_size``, ``silu_and_mul``,
``moe_sum``, ...) have no CPU kernel, so while building a no-op CPU kernel is registered for each op that
only writes into buffers its Python wrapper allocated (the buffers' sizes are vLLM's; their contents
reach no compile key).  On the GPU the real ops run.

``sweep`` calls it for every M in 1..max_num_batched_tokens, key-only, and groups the M by the set of JIT
keys they reach: one work item per group.
"""

from __future__ import annotations

from typing import Any

from .vllm_codec import decode, empty_tensor, encode, tensor_geometry
from .vllm_moe_lora import Attached

# vLLM's compiled-op namespaces whose CUDA kernels MoE calls between its Triton launches
OP_NAMESPACES = ("_C", "_moe_C")


def _backend(method: Any) -> str:
    for attr in sorted(vars(method)):
        value = getattr(method, attr)
        if attr.endswith("_backend") and hasattr(value, "name"):
            return f"{attr}={value.name}"
    return "no backend attribute"


def moe_facts(model: Any) -> list[dict]:
    """One record per distinct MoE layer kind: the modular kernel vLLM built for it, as data, or why
    there is none.  Runs in the resolution child (weights on ``meta``)."""
    from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase

    groups: dict[tuple, list[tuple[str, Any]]] = {}
    for name, module in model.named_modules():
        method = getattr(module, "quant_method", None)
        if not isinstance(method, FusedMoEMethodBase):
            continue
        shapes = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in sorted(module.named_parameters(recurse=False)))
        groups.setdefault((type(method).__name__, shapes), []).append((name, module))
    return [_one_kind(members) for _, members in sorted(groups.items(), key=lambda kv: kv[1][0][0])]


def _one_kind(members: list[tuple[str, Any]]) -> dict:
    name, layer = members[0]
    method = layer.quant_method
    facts: dict[str, Any] = {"layer": name, "layers": len(members), "method": type(method).__name__,
                             "backend": _backend(method)}
    experts_cls = getattr(method, "experts_cls", None)
    if experts_cls is not None:
        facts["experts"] = f"{experts_cls.__module__}:{experts_cls.__qualname__}"
    from .vllm_node import meta_allocations

    register_void_op_noops("Meta")  # e.g. online FP8 quantizes the weights at load: nothing to write on meta
    try:
        with meta_allocations():  # vLLM's own: builds the modular kernel (its CUDA buffers on meta, as the model's)
            method.process_weights_after_loading(layer)
    except Exception as err:  # noqa: BLE001 -- recorded: the plan says this layer is not covered and why
        facts["unbuilt"] = f"vLLM's process_weights_after_loading failed on meta weights: {type(err).__name__}: {err}"
        return facts
    kernel = getattr(method, "moe_kernel", None)
    if kernel is None or not hasattr(kernel, "apply") or not hasattr(kernel, "fused_experts"):
        facts["unbuilt"] = f"{type(method).__name__} builds no modular MoE kernel (monolithic or custom apply)"
        return facts
    experts, prepare = kernel.fused_experts, kernel.prepare_finalize
    facts["experts"] = f"{type(experts).__module__}:{type(experts).__qualname__}"
    facts["prepare_finalize"] = f"{type(prepare).__module__}:{type(prepare).__qualname__}"
    monolithic = getattr(method, "is_monolithic", False)
    try:
        facts["kernel"] = {
            "moe_config": encode(experts.moe_config),
            "quant_config": encode(experts.quant_config),
            # MXFP4 (triton_kernels) experts hold swizzled triton_kernels tensors: recorded with their layouts
            "w13": _weight_data(layer.w13_weight),
            "w2": _weight_data(layer.w2_weight),
            "activation": encode(layer.activation),
            "global_num_experts": int(layer.global_num_experts),
            "expert_map": encode(layer.expert_map),
            "apply_router_weight_on_input": bool(layer.apply_router_weight_on_input),
            "topk_indices_dtype": encode(method.topk_indices_dtype),
        }
        state = triton_kernels_state()
        if state:  # process-wide choices vLLM made while converting the weights (sm90: split_k pinned to 1)
            facts["kernel"]["triton_kernels_state"] = state
        if monolithic:  # the runner calls apply_monolithic with the router's logits (routing inside the kernel)
            facts["kernel"]["monolithic"] = {
                "num_expert_group": layer.num_expert_group, "topk_group": layer.topk_group,
                "e_score_correction_bias": encode(layer.e_score_correction_bias),
                "routed_scaling_factor": layer.routed_scaling_factor,
            }
            if getattr(layer, "hash_indices_table", None) is not None:
                facts["unbuilt"] = "hash-routed monolithic experts (input ids decide the experts) are not driven"
    except TypeError as err:
        facts["unbuilt"] = f"the {type(experts).__name__} kernel holds state aotwarm cannot record: {err}"
    return facts


# triton_kernels' opt-flags module, by API generation (vLLM's get_triton_kernels_version: "3.8" renamed it)
OPT_FLAGS_MODULES = {"3.8": "triton_kernels.matmul_details.opt_flags",
                     "older": "triton_kernels.matmul_ogs_details.opt_flags"}


def _opt_flags_module() -> Any:
    """``triton_kernels``' opt-flags module where vLLM has imported it in this process, else None."""
    import sys

    return next((sys.modules[n] for n in OPT_FLAGS_MODULES.values() if n in sys.modules), None)


def triton_kernels_state() -> dict:
    """The ``triton_kernels`` opt-flag constraints set in this process (vLLM's ``_swizzle_mxfp4`` sets them while
    it loads MXFP4 weights: they steer ``matmul_ogs``' split-K / persistent choices for every later call)."""
    module = _opt_flags_module()
    if module is None:
        return {}
    if getattr(module, "_opt_flags", None) is not None:
        raise TypeError("triton_kernels opt flags are pinned to one OptFlags object, which aotwarm does not record")
    constraints = dict(getattr(module, "_opt_flags_constraints", {}))
    return {"opt_flags_constraints": constraints} if constraints else {}


def apply_triton_kernels_state(state: dict) -> None:
    """Set the recorded constraints again, through ``triton_kernels``' own function (build workers, verify)."""
    if not state:
        return
    import importlib

    from vllm.utils.import_utils import get_triton_kernels_version  # puts vLLM's triton_kernels on the path

    version = get_triton_kernels_version()
    module = importlib.import_module(OPT_FLAGS_MODULES["3.8" if version == "3.8" else "older"])
    module.reset_opt_flags_constraints()
    module.update_opt_flags_constraints({str(k): v for k, v in state["opt_flags_constraints"].items()})


def _weight_data(w: Any) -> dict:
    """A plain weight as its geometry; a triton_kernels tensor (storage, layout, logical shape) as data."""
    import torch

    return {"tensor": tensor_geometry(w)} if isinstance(w, torch.Tensor) else {"data": encode(w)}


# -- running vLLM's kernel ----------------------------------------------------------------------------


def register_void_op_noops(dispatch_key: str = "CPU") -> None:
    """A kernel doing nothing, for ``dispatch_key`` (``CPU``: build workers' tensors; ``Meta``), for each of
    vLLM's CUDA ops that returns nothing (it fills buffers the Python wrapper allocated): only the launches'
    keys matter there.  Once per key and process."""
    import torch

    if dispatch_key in _REGISTERED:
        return
    _REGISTERED.add(dispatch_key)

    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.split("::")[0] in OP_NAMESPACES)
    libs: dict[str, Any] = {}
    for full in names:
        ns, _, rest = full.partition("::")
        op_name, _, overload = rest.partition(".")
        op = getattr(getattr(getattr(torch.ops, ns), op_name), overload or "default")
        if op._schema.returns or torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), dispatch_key):
            continue
        lib = libs.get(ns) or libs.setdefault(ns, torch.library.Library(ns, "IMPL"))
        lib.impl(rest, _noop, dispatch_key)
    _LIBS.extend(libs.values())


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


_LIBS: list[Any] = []  # keeps the torch.library registrations alive for the process
_REGISTERED: set[str] = set()


class Experts:
    """vLLM's modular MoE kernel for one layer kind, rebuilt from ``moe_facts``, with its weights."""

    def __init__(self, facts: dict, device: str):
        import torch
        from vllm.model_executor.layers.fused_moe import modular_kernel as mk
        from vllm.model_executor.layers.fused_moe.all2all_utils import maybe_make_prepare_finalize

        from .vllm_codec import _class

        from vllm.v1.worker.workspace import init_workspace_manager, is_workspace_manager_initialized

        self.device = device
        if device == "cpu":
            register_void_op_noops("CPU")
        if not is_workspace_manager_initialized():  # as GPUModelRunner.__init__ does
            init_workspace_manager(torch.device(device))
        k = facts["kernel"]
        moe_config = decode(k["moe_config"], device)
        quant_config = decode(k["quant_config"], device)
        if device != "cpu":  # real scales on the GPU: small and finite, so the outputs stay finite
            for desc in (quant_config._a1, quant_config._a2, quant_config._w1, quant_config._w2):
                for attr in ("scale", "alpha_or_gscale"):
                    value = getattr(desc, attr, None)
                    if isinstance(value, torch.Tensor):
                        value.fill_(1e-3 if value.is_floating_point() else 1)
        experts_cls = _class(facts["experts"])
        self.monolithic = k.get("monolithic")
        apply_triton_kernels_state(k.get("triton_kernels_state", {}))
        prepare = maybe_make_prepare_finalize(moe=moe_config, quant_config=quant_config, routing_tables=None,
                                              allow_new_interface=True, use_monolithic=self.monolithic is not None)
        experts = experts_cls(moe_config=moe_config, quant_config=quant_config)
        self.kernel = mk.FusedMoEKernel(prepare, experts)
        # --enable-lora: vLLM's LoRA context on the experts (its fused MoE-LoRA kernels run inside apply)
        self.lora = Attached(facts["lora"], experts, prepare, device) if "lora" in facts else None
        self.moe_config = moe_config
        self.w13, self.w2 = (self._weight(k["w13"]), self._weight(k["w2"]))
        self.activation = decode(k["activation"])
        self.global_num_experts = k["global_num_experts"]
        self.expert_map = decode(k["expert_map"], device)
        if self.expert_map is not None and device != "cpu":
            local = moe_config.num_local_experts
            self.expert_map.copy_(torch.where(torch.arange(self.global_num_experts) < local,
                                              torch.arange(self.global_num_experts), -1).to(self.expert_map))
        self.apply_router_weight_on_input = k["apply_router_weight_on_input"]
        # vLLM's routers emit int32 indices unless the kernel asks for another dtype
        self.indices_dtype = decode(k["topk_indices_dtype"]) or torch.int32

    def _weight(self, recorded: dict):
        import torch

        if "data" in recorded:  # a triton_kernels tensor: swizzled storage, uninitialised (packed MXFP4 bytes)
            return decode(recorded["data"], self.device)
        w = empty_tensor(recorded["tensor"], self.device)
        dtype = w.dtype
        if self.device == "cpu":  # never written: never paged in
            return w
        if dtype.is_floating_point and dtype.itemsize > 1:
            return w.normal_(0, 0.02)
        return w.view(torch.uint8).random_(0, 0x70).view(dtype)  # small finite fp8 / int8 / packed values

    def run(self, m: int, seed: int = 0) -> Any:
        """``FusedMoEKernel.apply`` for ``m`` tokens routed at random (as the runner calls it)."""
        import torch

        c = self.moe_config
        top_k = c.experts_per_token
        if self.lora is not None:
            self.lora.map_tokens(m)
        hidden = torch.empty(m, c.hidden_dim, dtype=c.in_dtype, device=self.device)
        if self.device == "cpu":  # contents reach no key: vLLM's CUDA ops are no-ops here
            topk_ids = torch.zeros(m, top_k, dtype=self.indices_dtype)
        else:  # distinct experts per token, at random, as a router picks them
            gen = torch.Generator(device=self.device).manual_seed(seed)
            hidden.normal_(0, 1, generator=gen)
            scores = torch.rand(m, self.global_num_experts, device=self.device, generator=gen)
            topk_ids = scores.topk(top_k, dim=1).indices.to(self.indices_dtype)
        if self.monolithic is not None:  # routing runs inside vLLM's kernel, from the router's logits
            logits = torch.empty(m, self.global_num_experts, dtype=c.router_logits_dtype or c.in_dtype,
                                 device=self.device)
            if self.device != "cpu":
                logits.normal_(0, 1, generator=gen)
            mono = self.monolithic
            return self.kernel.apply_monolithic(
                hidden_states=hidden, w1=self.w13, w2=self.w2, router_logits=logits, activation=self.activation,
                global_num_experts=self.global_num_experts, expert_map=self.expert_map,
                apply_router_weight_on_input=self.apply_router_weight_on_input,
                num_expert_group=mono["num_expert_group"], topk_group=mono["topk_group"],
                e_score_correction_bias=decode(mono["e_score_correction_bias"], self.device),
                routed_scaling_factor=mono["routed_scaling_factor"], routing_sink=None)
        topk_weights = torch.full((m, top_k), 1.0 / top_k, dtype=torch.float32, device=self.device)
        return self.kernel.apply(hidden_states=hidden, w1=self.w13, w2=self.w2, topk_weights=topk_weights,
                                 topk_ids=topk_ids, activation=self.activation,
                                 global_num_experts=self.global_num_experts, expert_map=self.expert_map,
                                 apply_router_weight_on_input=self.apply_router_weight_on_input)


def sweep(facts: dict, max_tokens: int) -> list[dict]:
    """Key-only: which JIT keys each M in 1..max_tokens reaches, grouped by key set: first and last M,
    how many M, the kernels, and each key's short hash (the probe of the plan recomputes the keys)."""
    import hashlib

    from ..observe import Observer

    experts = Experts(facts, "cpu")
    observer = Observer(key_only=True).install()
    groups: dict[tuple, dict] = {}
    for m in range(1, max_tokens + 1):
        experts.run(m)
        keys = tuple(observer.take()["jit_keys"])
        g = groups.get(keys)
        if g is None:
            g = groups[keys] = {"first": m, "last": m, "count": 0,
                                "kernels": sorted({k.split("|", 1)[0] for k in keys}),
                                "keys": [hashlib.sha256(k.encode()).hexdigest()[:16] for k in keys]}
        g["last"], g["count"] = m, g["count"] + 1
    return sorted(groups.values(), key=lambda g: g["first"])


def fused_moe_experts(p: dict[str, Any], device: str) -> None:
    """Op: vLLM's MoE kernel for one layer kind at ``p["tokens"]`` tokens."""
    from .vllm_platform import setup_worker_device

    setup_worker_device(device)
    Experts(p["moe"], device).run(p["tokens"], seed=p.get("seed", 0))
