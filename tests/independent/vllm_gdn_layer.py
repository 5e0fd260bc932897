"""Independent check of the GDN plans: run vLLM 0.33's own Gated DeltaNet layer as its model runner does.

Nothing here comes from aotwarm's planners, its engine ops or its record of vLLM's decisions.  The
expectations are vLLM's own objects, built by vLLM's code in this file:

* the serving config from ``vllm serve`` arguments (``make_arg_parser`` -> ``AsyncEngineArgs`` ->
  ``create_engine_config``), the model built by vLLM's loader (weights on ``meta``), the block size
  from ``Platform.update_block_size_for_backend``;
* the layer's state: vLLM's ``get_kv_cache_spec`` / ``resolve_kv_cache_layout`` /
  ``get_kv_cache_configs``, one of its ``KVCacheTensor`` placements, ``create_kv_cache_views`` and the
  layer's ``bind_kv_cache``;
* per batch, ``CommonAttentionMetadata`` as the runner fills it (decode requests first), vLLM's
  ``GDNAttentionMetadataBuilder.build`` (``build_for_cudagraph_capture`` for the batch sizes the
  runner captures as full decode graphs), then the layer's own ``forward`` under
  ``set_forward_context``: every tensor, stride and slice the kernels see is vLLM's.

It uses from aotwarm only the machine it runs on: the virtual GPU (``aotwarm.device``, for the CPU
test) and the virtual node's plumbing (``aotwarm.engines.vllm_node``: compiled ops against a driver
stand-in, process groups of the configured size, meta allocation while building the model).

FlashInfer's GDN prefill (CuTe DSL, not Triton; not installed on the GPU test machine) is replaced by
a stub returning outputs of the right shapes; every Triton kernel before and after it runs as vLLM
calls it.  Triton kernels launched while *building the metadata* (vLLM's
``_mamba_align_block_table_kernel`` in prefix-caching "align" mode, a runtime kernel aotwarm's GDN
family does not plan) are reported apart from the layer's (``phase``).

GPU use: ``python -m tests.independent.vllm_gdn_layer PLAN_JSON CACHE_DIR SEED N_PREFILL`` prints one
JSON line (compiles per phase, misses, calls).  CPU use: ``layer_keys`` (tests/test_independent_gdn.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

PHASE = {"now": "setup"}


def engine_config(model_dir: str, argv: list[str]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    args.model = model_dir
    return AsyncEngineArgs.from_cli_args(args).create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)


class Layer:
    """One GDN layer of the model, on ``device``, bound to its KV-cache pages, with its metadata builder."""

    def __init__(self, model_dir: str, argv: list[str], device: str, blocks: int = 64):
        import torch
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader import get_model_loader
        from vllm.platforms import current_platform
        from vllm.utils.torch_utils import set_default_torch_dtype
        from vllm.v1.kv_cache_interface import create_kv_cache_views
        from vllm.v1.worker.gpu.attn_utils import get_kv_cache_spec

        from aotwarm.engines.vllm_node import meta_allocations, process_groups

        self.device = torch.device(device)
        self.vc = vc = engine_config(model_dir, argv)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(process_groups(vc))
        self._stack.enter_context(set_current_vllm_config(vc))
        with set_default_torch_dtype(vc.model_config.dtype), meta_allocations():
            get_model_loader(vc.load_config).create_model(vllm_config=vc, model_config=vc.model_config)
        current_platform.update_block_size_for_backend(vc)
        kv_config = _engine_core_kv_cache_config(vc)
        specs = get_kv_cache_spec(vc)
        layout = vc.cache_config.get_resolved_kv_cache_layout()
        context = vc.compilation_config.static_forward_context
        tensor = next(t for t in kv_config.kv_cache_tensors if hasattr(context[t.layers[0]], "gdn_prefill_backend"))
        self.name = tensor.layers[0]
        self.layer = layer = context[self.name]
        self.spec = specs[self.name]
        # the runner's block table for this layer's group: (max_num_reqs, width) rows, sliced per batch
        from vllm.v1.worker.block_table import get_block_table_width

        group = next(g for g in kv_config.kv_cache_groups if self.name in g.layer_names).kv_cache_spec
        width = get_block_table_width(group.max_num_blocks_per_req(vc, vc.model_config.max_model_len),
                                      group.block_size, token_alignment=group.block_table_token_alignment)
        self.block_table = torch.zeros(vc.scheduler_config.max_num_seqs, width, dtype=torch.int32)
        self.group_block_size = group.block_size
        # this layer's placement, for `blocks` blocks (strides and offset as vLLM planned them)
        own = dataclasses.replace(tensor, layers=[self.name], size=tensor.offset + blocks * tensor.block_stride)
        raw = (torch.zeros if self.device.type == "cuda" else torch.empty)(own.size, dtype=torch.int8,
                                                                              device=self.device)
        (view,) = create_kv_cache_views(raw, self.spec, blocks, layout, own)
        layer.to_empty(device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(0)
        for p in layer.parameters():
            p.data.copy_(torch.randn(p.shape, generator=gen, device=self.device, dtype=torch.float32) * 0.02)
        layer.bind_kv_cache(view)
        builder_cls = layer.get_attn_backend().get_builder_cls()
        self.builder = builder_cls(self.spec, [self.name], vc, self.device)
        self.blocks = blocks
        self.hidden = vc.model_config.get_hidden_size()
        self.dtype = vc.model_config.dtype
        from vllm.v1.worker.workspace import init_workspace_manager

        init_workspace_manager(self.device)  # the worker does this at start-up; the checkpoint export uses it
        self._stub_flashinfer_prefill()

    def _stub_flashinfer_prefill(self) -> None:
        """FlashInfer's GDN prefill is CuTe DSL, not Triton: outputs of the right shape instead."""
        import torch

        import vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn as gdn

        if self.layer.gdn_prefill_backend != "flashinfer":
            return

        def stub(*args, q=None, v=None, initial_state=None, **_):
            out = torch.zeros(v.shape, dtype=q.dtype, device=q.device)
            return out, torch.zeros_like(initial_state)

        self.layer.chunk_gated_delta_rule.forward = stub
        self.layer.chunk_gated_delta_rule.forward_cuda = stub
        self.layer.chunk_gated_delta_rule._forward_method = stub
        gdn.fi_chunk_gated_delta_rule = stub

    def close(self) -> None:
        self._stack.close()

    def metadata(self, requests: list[tuple[int, int]], capture: bool = False) -> Any:
        """vLLM's GDN metadata for requests of (query tokens, tokens already computed), decodes first."""
        import torch
        from vllm.v1.attention.backend import CommonAttentionMetadata

        d = self.device
        q_lens = [q for q, _ in requests]
        seq_lens = [q + c for q, c in requests]
        starts = [0]
        for q in q_lens:
            starts.append(starts[-1] + q)
        bs, width = self.group_block_size, self.block_table.shape[1]
        table = self.block_table
        table.zero_()
        next_block = 1
        for i, s in enumerate(seq_lens):
            for j in range(min(-(-s // bs), width)):
                table[i, j] = next_block % self.blocks or 1
                next_block += 1
        qsl_cpu = torch.tensor(starts, dtype=torch.int32)
        seq_cpu = torch.tensor(seq_lens, dtype=torch.int32)
        cm = CommonAttentionMetadata(
            query_start_loc=qsl_cpu.to(d), query_start_loc_cpu=qsl_cpu, seq_lens=seq_cpu.to(d),
            num_reqs=len(requests), num_actual_tokens=starts[-1], max_query_len=max(q_lens),
            max_seq_len=max(seq_lens), block_table_tensor=table.to(d)[: len(requests)],
            slot_mapping=torch.zeros(starts[-1], dtype=torch.int64, device=d),
            seq_lens_cpu_upper_bound=seq_cpu,
            is_prefilling=torch.tensor([q > 1 or c == 0 for q, c in requests], device=d))
        PHASE["now"] = "metadata"
        try:
            return self.builder.build_for_cudagraph_capture(cm) if capture else self.builder.build(0, cm)
        finally:
            PHASE["now"] = "layer"

    def forward(self, requests: list[tuple[int, int]], capture: bool = False) -> None:
        import torch
        from vllm.forward_context import set_forward_context

        md = self.metadata(requests, capture)
        tokens = sum(q for q, _ in requests)
        hidden = torch.randn(tokens, self.hidden, dtype=self.dtype, device=self.device)
        PHASE["now"] = "layer"
        with set_forward_context({self.name: md}, self.vc, num_tokens=tokens):
            self.layer(hidden)


def _engine_core_kv_cache_config(vc: Any) -> Any:
    """vLLM's ``EngineCore._initialize_kv_caches`` with this process as its one worker; the worker's
    ``initialize_from_config`` adopts the result (layout, prefix-cache granularity) into the config."""
    from types import SimpleNamespace

    from vllm.v1.attention.backends.utils import get_supported_kv_cache_layouts
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.worker.gpu.attn_utils import get_kv_cache_spec
    from vllm.v1.worker.gpu_worker import Worker
    from vllm.v1.worker.worker_base import get_current_attn_backends

    got: dict = {}
    worker = SimpleNamespace(cache_config=vc.cache_config, vllm_config=vc,
                             _maybe_get_memory_pool_context=lambda tag: contextlib.nullcontext(),
                             model_runner=SimpleNamespace(
                                 initialize_kv_cache=lambda cfg, kv_cache_allocation_context=None: got.update(cfg=cfg)))
    executor = SimpleNamespace(
        get_kv_cache_specs=lambda: [get_kv_cache_spec(vc)],
        get_supported_kv_cache_layouts=lambda: [[x.name for x in get_supported_kv_cache_layouts(
            get_current_attn_backends(vc))]],
        set_kv_cache_layout=lambda name, interleave: None,
        # the budget only sets the number of blocks: 80 GiB
        determine_available_memory=lambda: [80 << 30],
        initialize_from_config=lambda cfgs: Worker.initialize_from_config(worker, cfgs[0]),
        compile_or_warm_up_model=lambda: None, collective_rpc=lambda *a, **k: [])
    EngineCore._initialize_kv_caches(SimpleNamespace(model_executor=executor), vc)
    return got["cfg"]


def serving_batches(layer: Layer, rng: random.Random, n_prefill: int) -> list[tuple[str, list, bool]]:
    """(label, requests, capture) for random prefill/mixed batches, then every decode batch size.

    Decode: uniform one-token batches run as the runner runs them: captured as full decode graphs at
    vLLM's capture sizes (up to ``max_num_seqs``), eagerly above the largest one."""
    vc = layer.vc
    sc, comp = vc.scheduler_config, vc.compilation_config
    max_tokens, max_seqs = sc.max_num_batched_tokens, sc.max_num_seqs
    out: list[tuple[str, list, bool]] = []
    for _ in range(n_prefill):
        t = rng.randint(1, max_tokens)
        room = min(max_seqs - 1, max_tokens - t)
        decodes = rng.choice([0, 0, rng.randint(1, room)]) if room >= 1 else 0
        seqs = rng.randint(1, max(1, min(t, max_seqs - decodes, 8)))
        cuts = sorted(rng.sample(range(1, t), seqs - 1)) if seqs > 1 else []
        lens = [b - a for a, b in zip([0] + cuts, cuts + [t])]
        reqs = ([(1, rng.randint(1, 4000)) for _ in range(decodes)]
                + [(q, rng.choice([0, rng.randint(1, 4000)])) for q in lens])
        out.append((f"prefill {t} tokens in {len(lens)} seqs behind {decodes} decodes", reqs, False))
    full = not vc.model_config.enforce_eager and comp.cudagraph_mode.has_full_cudagraphs()
    captured = sorted(s for s in (comp.cudagraph_capture_sizes or []) if s <= max_seqs) if full else []
    for b in captured:
        out.append((f"decode graph capture, batch {b}", [(1, 100 + i) for i in range(b)], True))
    for b in range(max(captured, default=0) + 1, max_seqs + 1):
        out.append((f"eager decode, batch {b}", [(1, 100 + i) for i in range(b)], False))
    return out


def layer_keys(model_dir: str, argv: list[str], target: Any, n_prefill: int, seed: int = 0) -> dict:
    """CPU: under the virtual target, the JIT keys vLLM's layer reaches (compiles skipped), per phase,
    and its kernel launches (``launches.Recorder``: one per distinct key) for a replay on a GPU."""
    from aotwarm.device import VirtualDevice
    from aotwarm.engines.vllm_node import load_compiled_ops, set_platform

    load_compiled_ops()
    VirtualDevice(target).install()
    set_platform(8)
    import vllm.utils.torch_utils as torch_utils

    torch_utils.PIN_MEMORY = False  # the runner's pinned staging buffers need a real GPU
    keys: dict[str, set[str]] = {"layer": set(), "metadata": set()}

    def on_miss(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        keys.setdefault(PHASE["now"], set()).add(f"{fn.name}|{key}")
        return True  # key only: nothing is compiled

    from triton import knobs

    knobs.runtime.jit_cache_hook = on_miss
    from tests.independent.launches import Recorder

    recorder = Recorder().install()
    layer = Layer(model_dir, argv, "cpu")
    _cpu_ops()
    calls = 0
    with _skip_matmuls():
        for _label, reqs, capture in serving_batches(layer, random.Random(seed), n_prefill):
            layer.forward(reqs, capture)
            calls += 1
    layer.close()
    return {"calls": calls, "launches": recorder.total, "recorded": list(recorder.launches.values()),
            **{phase: sorted(v) for phase, v in keys.items()}}


def _cpu_ops() -> None:
    """vLLM registers its layer ops for the CUDA dispatch key; on CPU tensors call the same Python functions."""
    import vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn as gdn
    from vllm.utils.torch_utils import vllm_lib

    for name in ("qwen_gdn_attention_core", "qwen_gdn_attention_core_fused_norm_packed"):
        fn = getattr(gdn, name, None)
        if fn is not None:
            with contextlib.suppress(RuntimeError):
                vllm_lib.impl(name, fn, dispatch_key="CPU")


@contextlib.contextmanager
def _skip_matmuls():
    """On CPU the projections' values never matter (kernels are not run): matrix products return empty
    tensors of the shape and layout aten would produce, instead of costing seconds each."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten

    class SkipMatmuls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (aten.mm.default, aten.addmm.default):
                a, b = (args[0], args[1]) if func is aten.mm.default else (args[1], args[2])
                return torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
            return func(*args, **kwargs)

    with SkipMatmuls():
        yield


def main(argv: list[str]) -> int:
    """GPU: every batch through vLLM's layer against TRITON_CACHE_DIR; one JSON line with the compiles."""
    plan_path, cache_dir, seed, n_prefill = argv[0], argv[1], int(argv[2]), int(argv[3])
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    from triton import knobs

    events: list[dict] = []
    knobs.compilation.listener = lambda *, src, metadata, metadata_group, times, cache_hit: events.append(
        {"kernel": metadata["name"], "hit": bool(cache_hit), "phase": PHASE["now"]})
    from aotwarm.engines.vllm_node import load_compiled_ops

    load_compiled_ops()
    plan = json.loads(Path(plan_path).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(Path(plan["model"]["source"]["path"]).read_text())
        layer = Layer(tmp, list(plan["serving"]["vllm_args"]), "cuda")
        calls = 0
        for _label, reqs, capture in serving_batches(layer, random.Random(seed), n_prefill):
            layer.forward(reqs, capture)
            calls += 1
        import torch

        torch.cuda.synchronize()
        layer.close()
    out: dict[str, Any] = {"calls": calls}
    for phase in ("layer", "metadata"):
        mine = [e for e in events if e["phase"] == phase]
        out[phase] = {"compiles": sum(not e["hit"] for e in mine), "hits": sum(e["hit"] for e in mine),
                      "misses": sorted({e["kernel"] for e in mine if not e["hit"]})}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
