"""What vLLM itself decides for a model and a ``vllm serve`` command line, on a virtual node of the target GPU.

Run as a child process (``python -m aotwarm.engines.vllm_resolve`` with a JSON request on stdin): it
makes the target GPU virtual (``device.VirtualDevice``) and vLLM's node (``vllm_node``), then calls
vLLM's own code exactly as a serving process does, in order:

1. ``make_arg_parser`` / ``AsyncEngineArgs.from_cli_args`` / ``create_engine_config`` with the
   OpenAI-server usage context: serving defaults, validation (a setting vLLM rejects is reported with
   vLLM's own message), the model's ``verify_and_update_config`` hooks;
2. the model loader's ``create_model`` (every CUDA allocation on ``meta``): the layers as vLLM builds
   them, with their backend choices (attention, GDN prefill and decode kernels);
3. ``Platform.update_block_size_for_backend``: block size, mamba block size and page padding;
4. ``EngineCore._initialize_kv_caches`` (KV-cache specs, layout, groups, block sizes, prefix-cache
   granularity, adopted by ``Worker.initialize_from_config``), then ``allocate_kv_cache`` (on
   ``meta``) and each layer's ``bind_kv_cache``: the state tensors every Gated DeltaNet kernel
   receives, with vLLM's strides (they are constexprs of those kernels);
5. each MoE layer kind's ``process_weights_after_loading`` (vLLM's modular kernel: prepare/finalize and
   the experts class its oracle chose), then that kernel's ``apply`` for every token count, key-only
   (``vllm_moe``).

Its answer (``decide()``) is JSON: the resolved serving config and, per kernel family, the facts
the planners need.  Nothing here re-derives a vLLM rule; where a value is read from a layer it is the
layer's own attribute.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# dtype names as recorded in plans (torch.bfloat16 -> "bfloat16")
_DTYPE_PREFIX = "torch."


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix(_DTYPE_PREFIX)


class VllmRejected(Exception):
    """vLLM refused the serving settings; the message is vLLM's."""


class CheckpointMismatch(Exception):
    """vLLM's weight loading refused the checkpoint's tensors for the model it built from config.json."""


# safetensors dtype names -> torch dtype attribute names
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                      "U64": "uint64", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                      "F8_E8M0": "float8_e8m0fnu"}


def _parse_args(argv: list[str]) -> Any:
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(FlexibleArgumentParser):
        def error(self, message: str):  # argparse would print usage and exit(2)
            raise VllmRejected(f"vllm serve arguments: {message}")

        def exit(self, status: int = 0, message: str | None = None):
            raise VllmRejected((message or "vllm serve arguments: stopped").strip())

    return make_arg_parser(Parser()).parse_args(argv)


def _engine_config(model_dir: str, argv: list[str]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    args = _parse_args(argv)
    if getattr(args, "model_tag", None):
        raise VllmRejected(f"give the model as aotwarm's MODEL argument, not in the vllm arguments "
                           f"(found {args.model_tag!r})")
    args.model = model_dir
    engine_args = AsyncEngineArgs.from_cli_args(args)
    return engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)


def _build_model(vllm_config: Any, model_config: Any = None) -> Any:
    """The model vLLM's loader creates for ``model_config`` (default: the served model's), on ``meta``: its modules,
    parameters' shapes and dtypes, no weights read."""
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.utils.torch_utils import set_default_torch_dtype

    from .vllm_node import meta_allocations

    model_config = model_config or vllm_config.model_config
    with set_default_torch_dtype(model_config.dtype), meta_allocations():
        return get_model_loader(vllm_config.load_config).create_model(vllm_config=vllm_config,
                                                                       model_config=model_config)


class _Node:
    """The engine core's view of one worker, for ``EngineCore._initialize_kv_caches``: vLLM's own sequence
    (KV-cache specs, layout, groups, block sizes, prefix-cache granularity) runs unchanged; the worker
    side adopts the result as ``GPUWorker.initialize_from_config`` does and keeps the config instead of
    allocating GPU memory."""

    def __init__(self, vllm_config: Any, memory: int):
        self.vllm_config = vllm_config
        self.cache_config = vllm_config.cache_config
        self.model_executor = self
        self.model_runner = self
        self.memory = memory
        self.kv_cache_config: Any = None

    # -- the executor, as the engine core calls it --------------------------------------------
    def get_kv_cache_specs(self) -> list[dict]:
        from vllm.v1.worker.gpu.attn_utils import get_kv_cache_spec

        return [get_kv_cache_spec(self.vllm_config)]

    def get_supported_kv_cache_layouts(self) -> list[list[str]]:
        from vllm.v1.attention.backends.utils import get_supported_kv_cache_layouts
        from vllm.v1.worker.worker_base import get_current_attn_backends

        backends = get_current_attn_backends(self.vllm_config)
        return [[layout.name for layout in get_supported_kv_cache_layouts(backends)]]

    def set_kv_cache_layout(self, name: str, interleave: int) -> None:
        return None  # one process: resolve_kv_cache_layout recorded it in this config already

    def determine_available_memory(self) -> list[int]:
        return [self.memory]

    def initialize_from_config(self, kv_cache_configs: list) -> None:
        from vllm.v1.worker.gpu_worker import Worker

        Worker.initialize_from_config(self, kv_cache_configs[0])

    def compile_or_warm_up_model(self) -> None:
        return None

    def collective_rpc(self, *args: Any, **kwargs: Any) -> list:
        return []

    # -- the worker and its model runner ---------------------------------------------------------
    def _maybe_get_memory_pool_context(self, tag: str) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def initialize_kv_cache(self, kv_cache_config: Any, kv_cache_allocation_context: Any = None) -> None:
        self.kv_cache_config = kv_cache_config


def _kv_caches(vllm_config: Any, memory: int) -> tuple[dict, Any]:
    """The KV-cache views vLLM binds to each layer (on meta) after the engine core's KV-cache set-up."""
    import torch
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.worker.utils import allocate_kv_cache

    from .vllm_node import meta_allocations

    node = _Node(vllm_config, memory)
    EngineCore._initialize_kv_caches(node, vllm_config)
    config = node.kv_cache_config
    if config is None or not config.kv_cache_tensors:
        return {}, config
    with meta_allocations():
        views = allocate_kv_cache(config, torch.device("meta"), vllm_config.cache_config.get_resolved_kv_cache_layout(),
                                  None)
    return views, config


def _geometry(t: Any) -> dict:
    """Shape, strides, dtype and byte offset of a tensor (the offset into its allocation)."""
    return {"shape": list(t.shape), "stride": list(t.stride()), "dtype": _dtype_name(t.dtype),
            "byte_offset": t.storage_offset() * t.element_size()}


def _gdn_facts(layers: dict, views: dict) -> dict | None:
    from vllm.model_executor.layers.mamba.mamba_utils import is_conv_state_dim_first

    gdn = {name: layer for name, layer in layers.items() if hasattr(layer, "gdn_prefill_backend")}
    if not gdn:
        return None
    name = sorted(gdn)[0]
    layer = gdn[name]
    layer.bind_kv_cache(views[name])  # vLLM's own unpacking of the page into per-state views
    conv_raw, ssm = layer.kv_cache[0], layer.kv_cache[1]
    # the layer hands the conv kernels (..., dim, state_len): SD storage is transposed on use
    dim_first = is_conv_state_dim_first()
    conv = conv_raw if dim_first else conv_raw.transpose(-1, -2)
    conv_dtype, ssm_dtype = layer.get_state_dtype()[:2]
    facts = {
        "layer": name,
        "layers": len(gdn),
        "tp_size": layer.tp_size,
        "num_k_heads": layer.num_k_heads // layer.tp_size,
        "num_v_heads": layer.num_v_heads // layer.tp_size,
        "head_k_dim": layer.head_k_dim,
        "head_v_dim": layer.head_v_dim,
        "conv_kernel": layer.conv_kernel_size,
        "interleaved": bool(layer.gqa_interleaved_layout),
        "activation": layer.norm.activation,
        "prefill_backend": layer.gdn_prefill_backend,
        "decode_kernel": layer.gdn_decode_kernel,
        "packed_recurrent_decode": bool(layer.enable_packed_recurrent_decode),
        "fused_spec_decode": bool(layer.enable_fused_gdn_spec_decode),
        "num_spec": int(layer.num_spec),
        "conv_state_dtype": _dtype_name(conv_dtype),
        "ssm_state_dtype": _dtype_name(ssm_dtype),
        "conv_state_dim_first": dim_first,
        "checkpoint_export": bool(getattr(layer, "_exports_checkpoints", False)),
        # RMSNormGated is a vLLM CustomOp: its Triton kernel runs only when the op is enabled (custom_ops
        # "all", e.g. --enforce-eager); otherwise its torch code is compiled into the model by torch.compile
        "norm_custom_op": bool(type(layer.norm).enabled()),
        "state": {"conv": _geometry(conv), "ssm": _geometry(ssm)},
        "page_bytes": int(views[name].stride(0) * views[name].element_size()),
    }
    if facts["checkpoint_export"]:
        shape, dtype = layer._checkpoint_buffer_spec  # the workspace rows FlashInfer's prefill emits into
        facts["checkpoint_buffer"] = {"shape": list(shape), "dtype": _dtype_name(dtype)}
    return facts


def _checkpoint_on_meta(model: Any, vc: Any, checkpoint: dict) -> dict:
    """vLLM's own weight loading of the checkpoint, fed meta tensors of the headers' dtypes and shapes.

    vLLM's loader runs as in serving (``DefaultModelLoader.load_weights`` with the checkpoint iterator replaced):
    every weight loader -- tensor-parallel narrowing, merged projections (qkv, gate/up, MLA's fused_qkv_a),
    experts and their scales -- with its shape checks, and vLLM's check that every parameter was loaded where
    vLLM makes it (unquantized models).  Only headers were read: no weight bytes exist here."""
    import time

    import torch
    from vllm.model_executor.model_loader import get_model_loader

    from .vllm_moe import register_void_op_noops
    from .vllm_node import meta_allocations

    tensors = checkpoint["tensors"]
    unknown = sorted({str(h.get("dtype")) for h in tensors.values()} - set(SAFETENSORS_DTYPES))
    if unknown:
        raise CheckpointMismatch(f"safetensors dtype(s) {', '.join(unknown)} are not ones vLLM loads")
    register_void_op_noops("Meta")  # loaders that run vLLM's CUDA ops on what they load: nothing to write
    weights = ((name, torch.empty(h["shape"], dtype=getattr(torch, SAFETENSORS_DTYPES[h["dtype"]]), device="meta"))
               for name, h in sorted(tensors.items()))
    loader = get_model_loader(vc.load_config)
    try:
        with meta_allocations():
            if hasattr(loader, "get_all_weights"):  # vLLM's DefaultModelLoader: its whole load_weights, its checks
                loader.get_all_weights = lambda model_config, model: weights
                loader.counter_before_loading_weights = time.perf_counter()
                loader.load_weights(model, vc.model_config)
            else:
                model.load_weights(weights)
    except Exception as err:  # noqa: BLE001 -- vLLM's loaders assert / raise in their own ways: say which
        raise CheckpointMismatch(f"{type(err).__name__}: {_one_line(err)}") from err
    return {"source": checkpoint["source"], "tensors": len(tensors)}


def decide(model_dir: str, argv: list[str], target: Any, checkpoint: dict | None = None) -> dict:
    """vLLM's decisions for ``vllm serve MODEL_DIR ARGV`` on this (virtual) node, as JSON-able facts; with
    ``checkpoint`` ({"source", "tensors": {name: {dtype, shape}}}) vLLM's loaders first check it fits."""
    import vllm
    from vllm.config import set_current_vllm_config
    from vllm.platforms import current_platform

    from .vllm_node import process_groups

    vc = _engine_config(model_dir, argv)
    with process_groups(vc), set_current_vllm_config(vc):
        model = _build_model(vc)
        loaded = _checkpoint_on_meta(model, vc, checkpoint) if checkpoint and checkpoint.get("tensors") else None
        current_platform.update_block_size_for_backend(vc)
        layers = dict(vc.compilation_config.static_forward_context)
        memory = int(target.total_memory * vc.cache_config.gpu_memory_utilization)
        views, kv_config = _kv_caches(vc, memory)
        gdn = _gdn_facts(layers, views)
        backends = sorted({type(layer).__name__ + ":" + layer.get_attn_backend().get_name()
                           for layer in layers.values() if hasattr(layer, "get_attn_backend")})
        methods = _quant_methods(model)
        linears = _fp8_linears(model)
        modules = _module_kinds(model)
        lora = vc.lora_config is not None
        moe = _moe_kinds(model, vc.scheduler_config.max_num_batched_tokens, swept=not lora)
        flashinfer = _flashinfer(model, vc)
        if lora:  # last: vLLM's LoRA manager replaces the model's layers; the MoE kinds are swept with it
            _moe_lora(model, vc, moe, vc.scheduler_config.max_num_batched_tokens)
    cc, sc, pc, comp, mc = (vc.cache_config, vc.scheduler_config, vc.parallel_config, vc.compilation_config,
                            vc.model_config)
    spec = vc.speculative_config
    resolved = {
        "vllm_version": vllm.__version__,
        "architecture": mc.architecture,
        "dtype": _dtype_name(mc.dtype),
        "max_model_len": mc.max_model_len,
        "tensor_parallel_size": pc.tensor_parallel_size,
        "pipeline_parallel_size": pc.pipeline_parallel_size,
        "data_parallel_size": pc.data_parallel_size,
        "enable_expert_parallel": bool(pc.enable_expert_parallel),
        "max_num_batched_tokens": sc.max_num_batched_tokens,
        "max_num_seqs": sc.max_num_seqs,
        "enforce_eager": bool(mc.enforce_eager),
        "cudagraph_mode": comp.cudagraph_mode.name if comp.cudagraph_mode is not None else None,
        "cudagraph_capture_sizes": list(comp.cudagraph_capture_sizes or []),
        "max_cudagraph_capture_size": comp.max_cudagraph_capture_size,
        "block_size": cc.block_size,
        "kv_cache_dtype": cc.cache_dtype,
        "enable_prefix_caching": bool(cc.enable_prefix_caching),
        "mamba_cache_mode": cc.mamba_cache_mode,
        "mamba_block_size": cc.mamba_block_size,
        "mamba_page_size_padded": cc.mamba_page_size_padded,
        "mamba_cache_dtype": cc.mamba_cache_dtype,
        "mamba_ssm_cache_dtype": cc.mamba_ssm_cache_dtype,
        "kv_cache_layout": cc.kv_cache_layout,
        "hash_block_size": cc.hash_block_size,
        "cache_hit_alignment_tokens": cc.cache_hit_alignment_tokens,
        "kv_cache_groups": len(kv_config.kv_cache_groups) if kv_config is not None else 0,
        "attention_backends": backends,
        "speculative_method": getattr(spec, "method", None) if spec else None,
        "num_speculative_tokens": vc.num_speculative_tokens if spec else 0,
        "use_v2_model_runner": bool(getattr(vc, "use_v2_model_runner", False)),
        "is_hybrid": bool(mc.is_hybrid),
        "runner_type": mc.runner_type,
        "enable_prompt_embeds": bool(mc.enable_prompt_embeds),
        "kv_transfer": vc.kv_transfer_config is not None,
        "structured_outputs_backend": vc.structured_outputs_config.backend,
        "enable_jit_warmup": bool(vc.kernel_config.enable_jit_warmup),
        "lora": _lora(vc.lora_config),
    }
    return {"argv": argv, "resolved": resolved, "gdn": gdn, "layer_methods": methods, "moe": moe,
            "fp8_linears": linears, "modules": modules, "flashinfer": flashinfer,
            "checkpoint": loaded or {"source": (checkpoint or {}).get("source", "no checkpoint headers read")}}


def _lora(lc: Any) -> dict | None:
    """vLLM's LoRA config as it resolved it (``--enable-lora``), or None."""
    if lc is None:
        return None
    return {"max_loras": lc.max_loras, "max_lora_rank": lc.max_lora_rank,
            "fully_sharded_loras": bool(lc.fully_sharded_loras)}


def _module_kinds(model: Any) -> list[dict]:
    """Every module class in the model vLLM built, with how many there are, its bases (for the plan's layer
    statement, ``planners/engine_layers.py``), whether it is a vLLM CustomOp and enabled for this config
    (else torch.compile compiles its torch code into the graph), and its quant method."""
    from vllm.model_executor.custom_op import CustomOp

    kinds: dict[str, dict] = {}
    for module in model.modules():
        cls = type(module)
        name = f"{cls.__module__}:{cls.__qualname__}"
        kind = kinds.get(name)
        if kind is None:
            method = getattr(module, "quant_method", None)
            kind = kinds[name] = {
                "class": name, "count": 0, "children": len(list(module.children())),
                "bases": [f"{b.__module__}:{b.__qualname__}" for b in cls.__mro__[1:]
                          if b.__module__.startswith(("vllm.", "torch.nn.modules"))],
                "custom_op": isinstance(module, CustomOp),
                "enabled": bool(cls.enabled()) if isinstance(module, CustomOp) else None,
                "quant_method": type(method).__name__ if method is not None else None,
            }
        kind["count"] += 1
    return sorted(kinds.values(), key=lambda k: k["class"])


def _fp8_linears(model: Any) -> list[dict]:
    """Every FP8 linear layer kind as vLLM built it: the per-rank weight (N, K), whether vLLM's method sends it
    to DeepGEMM (``use_deep_gemm``) and the kernel objects it chose (e.g. FlashInfer for small M with a
    DeepGEMM fallback), with how many layers share it.  Layer names lose their index: ``layers.*.mlp.gate_up_proj``."""
    import re

    from vllm.utils.deep_gemm import should_use_deepgemm_for_fp8_linear

    kinds: dict[tuple, dict] = {}
    for name, module in model.named_modules():
        method = getattr(module, "quant_method", None)
        weight = getattr(module, "weight", None)
        if method is None or not hasattr(method, "use_deep_gemm") or weight is None or weight.dim() != 2:
            continue
        kernel = getattr(method, "fp8_linear", None)
        chain = [type(kernel).__name__] if kernel is not None else []
        for attr in ("base", "fallback"):
            part = getattr(kernel, attr, None)
            if part is not None:
                chain.append(f"{attr}={type(part).__name__}")
        where = re.sub(r"\.\d+\.", ".*.", name)
        out_dtype = getattr(method, "out_dtype", None) or weight.dtype
        # the check vLLM's DeepGEMM linear kernel makes on every call (N % 64, K % 128, bf16 out, DeepGEMM usable)
        runtime = bool(method.use_deep_gemm) and bool(should_use_deepgemm_for_fp8_linear(out_dtype, tuple(weight.shape)))
        key = (where, int(weight.shape[0]), int(weight.shape[1]), runtime, tuple(chain))
        kind = kinds.setdefault(key, {"layer": where, "module": type(module).__name__, "n": key[1], "k": key[2],
                                      "weight_dtype": _dtype_name(weight.dtype), "use_deep_gemm": bool(method.use_deep_gemm),
                                      "deepgemm": runtime, "out_dtype": _dtype_name(out_dtype),
                                      "block": list(getattr(method, "weight_block_size", None) or []),
                                      "kernel": list(chain), "count": 0})
        kind["count"] += 1
    return sorted(kinds.values(), key=lambda k: k["layer"])


def _moe_kinds(model: Any, max_tokens: int, swept: bool = True) -> list[dict]:
    """Each MoE layer kind's modular kernel as vLLM built it, and (``swept``) which JIT keys each token count M
    in 1..max_tokens reaches through it (``vllm_moe``)."""
    from .vllm_moe import moe_facts

    kinds = moe_facts(model)
    if swept:
        for kind in kinds:
            _sweep_kind(kind, max_tokens)
    return kinds


def _sweep_kind(kind: dict, max_tokens: int, how: str = "") -> None:
    from .vllm_moe import sweep

    if "kernel" not in kind:
        return
    try:
        kind["sweep"] = sweep(kind, max_tokens)
        kind["max_tokens"] = max_tokens
    except Exception as err:  # noqa: BLE001 -- recorded: the plan states the kind as not covered, with this
        kind["unswept"] = f"{how}{type(err).__name__}: {_one_line(err)}"


def _moe_lora(model: Any, vc: Any, kinds: list[dict], max_tokens: int) -> None:
    """With ``--enable-lora``: each MoE kind's LoRA context as vLLM's LoRA manager sets it up, and the sweep
    again with it (the LoRA kernels, and the base path as it runs with a LoRA context) (``vllm_moe_lora``)."""
    from .vllm_moe_lora import lora_facts

    lora_facts(model, vc, kinds)
    for kind in kinds:  # without a LoRA context where vLLM's could not be built (said in the plan)
        _sweep_kind(kind, max_tokens, "with vLLM's LoRA context: " if "lora" in kind else "")
        if "lora" in kind and "unswept" in kind:
            kind["lora_unbuilt"] = "the experts could not be driven GPU-less with vLLM's LoRA context (below)"


def _flashinfer(model: Any, vc: Any) -> dict:
    """The FlashInfer JIT modules vLLM's call sites load (``vllm_flashinfer``), or why they could not be run."""
    try:
        from .vllm_flashinfer import flashinfer_facts

        return flashinfer_facts(model, vc)
    except Exception as err:  # noqa: BLE001 -- recorded: the flashinfer family states it as not covered
        return {"error": f"{type(err).__name__}: {_one_line(err)}"}


def _quant_methods(model: Any) -> list[dict]:
    """Which method (and backend) vLLM chose for each kind of linear and MoE layer, with how many layers."""
    counts: dict[tuple, int] = {}
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is None or not hasattr(method, "apply"):
            continue
        chosen = []
        for attr in sorted(vars(method)):
            value = getattr(method, attr)
            if "backend" in attr.lower() and value is not None and isinstance(value, (str, int)) or (
                    "backend" in attr.lower() and hasattr(value, "name") and hasattr(value, "value")):
                chosen.append(f"{attr}={getattr(value, 'name', value)}")
        kernel = getattr(method, "kernel", None) or getattr(method, "moe_kernel", None)
        if kernel is not None:
            chosen.append(f"kernel={type(kernel).__name__}")
        key = (type(module).__name__, type(method).__name__, tuple(chosen))
        counts[key] = counts.get(key, 0) + 1
    return [{"layer": k[0], "method": k[1], "chosen": list(k[2]), "count": n} for k, n in sorted(counts.items())]


def _one_line(err: BaseException) -> str:
    """vLLM's reason, on one line (pydantic validation errors carry it in ``errors()``)."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return str(first.get("msg", err)).replace("Value error, ", "").splitlines()[0]
        except Exception:
            pass
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def resolve(model_dir: str, argv: list[str], target: dict, gpus: int = 8, timeout: float = 900.0,
            checkpoint: dict | None = None) -> dict:
    """Ask vLLM (in a child process, under the virtual target) what it decides for ``vllm serve`` ARGV.

    Raises BadInput with vLLM's own reason when vLLM rejects the settings, Incompatible when vLLM
    cannot run here at all."""
    import subprocess

    from ..errors import AotwarmError, BadInput, Incompatible

    request = json.dumps({"model_dir": model_dir, "argv": argv, "target": target, "gpus": gpus,
                          "checkpoint": checkpoint})
    try:
        proc = subprocess.run([sys.executable, "-m", "aotwarm.engines.vllm_resolve"], input=request,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AotwarmError(f"vLLM did not finish resolving its config within {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AotwarmError(f"resolving the serving config with vLLM failed (exit {proc.returncode}): {tail}")
    answer = json.loads(lines[-1])
    if answer["ok"]:
        return answer
    if answer["kind"] == "rejected":
        raise BadInput(f"vLLM rejects these serving settings: {answer['error']}")
    if answer["kind"] == "checkpoint":
        raise BadInput(f"the config and the weights disagree ({(checkpoint or {}).get('source')}): vLLM's weight "
                       f"loader says {answer['error']}; use the checkpoint's own config.json (or --weights off to "
                       f"plan from the config alone)")
    if answer["kind"] == "environment":
        raise Incompatible(f"vLLM cannot run its config code here ({answer['error']}): install vLLM with its own "
                           f"dependencies (pip install vllm==0.33.0), as the serving image has it")
    raise AotwarmError(f"vLLM failed while resolving the serving config: {answer['error']}")


def _vllm_env() -> dict[str, str]:
    """The VLLM_* variables of this environment: vLLM reads them while deciding (kernels, layouts)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("VLLM_")}


def _cache_key(config_text: str, argv: list[str], target: dict, gpus: int, checkpoint: dict | None = None) -> str:
    """Identity of a resolution: vLLM's installed files (its RECORD), this module, the inputs, VLLM_* env."""
    import hashlib
    import importlib.metadata
    from pathlib import Path

    try:
        record = importlib.metadata.distribution("vllm").read_text("RECORD") or ""
    except importlib.metadata.PackageNotFoundError:
        record = ""
    here = Path(__file__)
    parts = [record, *(here.with_name(n).read_text() for n in (here.name, "vllm_node.py", "vllm_moe.py", "vllm_codec.py",
                                                          "vllm_moe_lora.py", "vllm_flashinfer.py")),
             *((here.parent.parent / n).read_text() for n in ("observe.py", "device.py")),  # key names, virtual GPU
             config_text,
             json.dumps(argv), json.dumps(target, sort_keys=True), str(gpus), json.dumps(_vllm_env()),
             json.dumps(checkpoint, sort_keys=True)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def resolve_for_source(source: Any, argv: list[str], target: Any, gpus: int = 8, checkpoint: dict | None = None) -> dict:
    """``resolve`` for a model config aotwarm loaded (``model.ModelSource``); answers are cached per
    (vLLM files, config, arguments, target, VLLM_* env, checkpoint headers) under
    ``$XDG_CACHE_HOME/aotwarm/vllm-resolve``."""
    import tempfile
    from pathlib import Path

    from ..fsutil import atomic_write_text, user_cache_dir

    text = Path(source.path).read_text() if source.kind != "bundled" else _bundled_text(source)
    key = _cache_key(text, argv, target.to_dict(), gpus, checkpoint)
    cached = user_cache_dir() / "vllm-resolve" / f"{key}.json"
    if cached.is_file():
        try:
            return {**json.loads(cached.read_text()), "config_json": text}
        except (OSError, json.JSONDecodeError):
            pass
    with tempfile.TemporaryDirectory(prefix="aotwarm-model-") as tmp:
        # vLLM reads the model's config.json from a folder: the exact text aotwarm planned from
        (Path(tmp) / "config.json").write_text(text)
        answer = resolve(tmp, argv, target.to_dict(), gpus, checkpoint=checkpoint)
    answer["vllm_env"] = _vllm_env()
    answer["config_json"] = text  # the exact config vLLM resolved: build workers start vLLM's runner from it
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, json.dumps(answer, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs the next plan a resolution
    return answer


def _bundled_text(source: Any) -> str:
    from ..model import _bundled_config_text

    text = _bundled_config_text(source.model)
    if text is None:
        raise FileNotFoundError(source.path)
    return text


def main() -> int:
    """Child entry: read {"model_dir", "argv", "target", "gpus"} on stdin; one JSON answer on stdout."""
    request = json.loads(sys.stdin.read())
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # vLLM's own prints go to stderr
    sys.stdout = sys.stderr
    from ..device import VirtualDevice
    from ..targets import Target
    from .vllm_node import load_compiled_ops, no_pinned_memory, quiet_vllm_logging, set_platform

    quiet_vllm_logging()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # only config.json is read, from the folder given
    answer: dict
    try:
        loaded = load_compiled_ops()
        VirtualDevice(Target.from_dict(request["target"])).install()  # noqa: the target GPU, virtual
        set_platform(int(request.get("gpus", 8)))
        no_pinned_memory()
        target = Target.from_dict(request["target"])
        answer = {"ok": True, "compiled_ops": loaded,
                  **decide(request["model_dir"], list(request["argv"]), target, request.get("checkpoint"))}
    except ImportError as err:
        answer = {"ok": False, "kind": "environment", "error": f"{type(err).__name__}: {_one_line(err)}"}
    except CheckpointMismatch as err:
        answer = {"ok": False, "kind": "checkpoint", "error": str(err)}
    except (VllmRejected, ValueError, TypeError, NotImplementedError, AssertionError) as err:
        answer = {"ok": False, "kind": "rejected", "error": _one_line(err)}
    except Exception as err:  # vLLM failed in a way we did not foresee: say where
        import traceback

        traceback.print_exc()
        answer = {"ok": False, "kind": "failed", "error": f"{type(err).__name__}: {_one_line(err)}"}
    proto.write(json.dumps(answer) + "\n")
    proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
