"""vLLM engine (0.33.x): the Triton kernels vLLM's Qwen3.5 / Qwen3-Next Gated DeltaNet layer launches.

Every op imports vLLM's own kernel entry points from the installed vLLM and calls them with
tensors laid out exactly as ``QwenGatedDeltaNetAttention`` lays them out (vLLM 0.33
``model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py``): strides are constexprs or
specialized ints in these kernels, so a tensor with another stride would compile another kernel.

* input layout: Qwen3.5 splits ``mixed_qkv`` out of the fused ``[T, qkv + z]`` projection (row
  stride ``qkv + z``); Qwen3-Next (interleaved GQA) concatenates q, k, v into a contiguous
  ``[T, qkv]``.  ``b``/``a`` are made contiguous ``[T, HV]``.
* mamba cache: the conv and recurrent states are views into vLLM's hybrid KV-cache pages, with the
  exact shapes, strides and byte offsets vLLM's own ``allocate_kv_cache`` + ``bind_kv_cache`` gave
  them for the serving config (recorded by ``vllm_resolve``; the conv state as the layer hands it to
  the kernels, transposed from vLLM's "SD" storage).  The block stride is the whole padded page, and
  the strides are constexprs of the conv, decode and checkpoint kernels.
* ops: ``gdn_conv_prefill`` (``causal_conv1d_fn``), ``gdn_post_conv`` (``fused_post_conv_prep``),
  ``gdn_chunk_prefill`` (vLLM's FLA ``chunk_gated_delta_rule``, Triton prefill backend),
  ``gdn_conv_update`` (``causal_conv1d_update``, plain and speculative), ``gdn_packed_decode``
  (``fused_recurrent_gated_delta_rule_packed_decode``), ``gdn_sigmoid_gating_update``
  (``fused_sigmoid_gating_delta_rule_update``, mixed batches and speculative), and
  ``gdn_gated_rmsnorm`` (``rmsnorm_fn``, what ``RMSNormGated`` runs).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import EngineInfo, package_location, package_source_sha256, torch_dtype, vllm_moe, vllm_runner
from .vllm_platform import setup_worker_device as _setup

SUPPORTED = ("0.33.",)
ALLOW_ENV = "AOTWARM_ALLOW_ENGINE_VERSION"
# The vLLM source folders whose Python text the planned kernels come from (their hash is recorded).
KERNEL_SOURCES = ("third_party/flash_linear_attention", "model_executor/layers/mamba/ops",
                  "model_executor/layers/fused_moe", "model_executor/warmup", "triton_utils",
                  "third_party/triton_kernels")


def detect() -> EngineInfo:
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        raise BadInput("engine 'vllm' is not installed: install the vLLM your serving image runs (aotwarm supports 0.33.x)")
    if not version.startswith(SUPPORTED) and os.environ.get(ALLOW_ENV) != version:
        raise BadInput(f"vLLM {version} is installed but aotwarm plans vLLM {', '.join(s + 'x' for s in SUPPORTED)} "
                       f"(kernel keys and dispatch rules differ between releases): install vllm 0.33, or set "
                       f"{ALLOW_ENV}={version} to plan it with the 0.33 rules at your own risk")
    location = package_location("vllm", "vLLM")
    return EngineInfo("vllm", "vllm", version, kernel_sources_sha256(location), str(location))


def kernel_sources_sha256(location: Path) -> str:
    """One hash over the kernel source folders (a node with different kernel text would miss)."""
    import hashlib

    h = hashlib.sha256()
    for rel in KERNEL_SOURCES:
        folder = location / rel
        h.update(rel.encode() + b"\0" + (package_source_sha256(folder) if folder.is_dir() else "absent").encode())
    return h.hexdigest()


# -- shared tensor set-up --------------------------------------------------------------------------


def state_views(state: dict, blocks: int, device: str) -> tuple:
    """The (conv, SSM) state tensors of ``blocks`` KV-cache blocks, laid out exactly as vLLM bound them.

    ``state`` is ``vllm_resolve``'s record of vLLM's views: shape, strides, dtype and byte offset into
    the page.  One raw byte buffer is allocated and each state is set onto it with those strides, so
    the kernels see vLLM's page stride and alignment (only the number of blocks is smaller)."""
    import torch

    def sized(g: dict) -> tuple[list[int], int]:
        shape = [blocks, *g["shape"][1:]]
        itemsize = torch.empty(0, dtype=torch_dtype(g["dtype"])).element_size()
        end = g["byte_offset"] + itemsize * (1 + sum((n - 1) * st for n, st in zip(shape, g["stride"])))
        return shape, end

    geometry = [state["conv"], state["ssm"]]
    nbytes = max(sized(g)[1] for g in geometry)
    nbytes += -nbytes % 256
    # CPU (build workers): never written, so never paged in; GPU (replay): zeroed like vLLM's pool
    raw = (torch.zeros if device != "cpu" else torch.empty)(nbytes, dtype=torch.uint8, device=device)
    views = []
    for g in geometry:
        dtype = torch_dtype(g["dtype"])
        view = torch.empty(0, dtype=dtype, device=device)
        view.set_(raw.untyped_storage(), g["byte_offset"] // view.element_size(), sized(g)[0], g["stride"])
        views.append(view)
    return tuple(views)


class _Layer:
    """The tensors one GDN layer owns, TP-local, as vLLM allocates them."""

    def __init__(self, p: dict[str, Any], device: str):
        import torch

        self.p, self.device = p, device
        self.hk, self.hv, self.k, self.v, self.w = (p["num_k_heads"], p["num_v_heads"], p["head_k_dim"],
                                                     p["head_v_dim"], p["conv_kernel"])
        self.dtype = torch_dtype(p["dtype"])  # the state dtypes are in p["state"], as vLLM bound them
        self.num_spec = p.get("num_spec", 0)
        self.qkv = 2 * self.hk * self.k + self.hv * self.v
        self.blocks = p.get("cache_blocks", 64)
        gen = torch.Generator(device=device).manual_seed(0)
        self.gen = gen
        # conv1d weight (conv_dim, 1, W) viewed as (conv_dim, W); no bias in Qwen GDN
        self.conv_weight = (torch.randn(self.qkv, 1, self.w, dtype=self.dtype, device=device, generator=gen) * 0.1
                            ).view(self.qkv, self.w)
        self.A_log = torch.randn(self.hv, dtype=torch.float32, device=device, generator=gen) * 0.1
        self.dt_bias = torch.ones(self.hv, dtype=self.dtype, device=device)
        self.conv_state, self.ssm_state = state_views(p["state"], self.blocks, device)

    def projections(self, tokens: int):
        """mixed_qkv (with the projection's row stride), b, a as the layer passes them on."""
        import torch

        z = self.hv * self.v
        width = self.qkv + (0 if self.p.get("interleaved") else z)
        proj = torch.randn(tokens, width, dtype=self.dtype, device=self.device, generator=self.gen)
        mixed_qkv = proj if self.p.get("interleaved") else proj[:, : self.qkv]
        if self.p.get("interleaved"):  # Qwen3-Next: b/a reshaped out of the interleaved split -> fresh rows
            b = torch.randn(tokens, self.hv, dtype=self.dtype, device=self.device, generator=self.gen)
            a = torch.randn(tokens, self.hv, dtype=self.dtype, device=self.device, generator=self.gen)
            return mixed_qkv, b, a
        # Qwen3.5: ba.chunk(2, -1) then .contiguous(), a no-op for one token (the row stride stays 2*HV)
        ba = torch.randn(tokens, 2 * self.hv, dtype=self.dtype, device=self.device, generator=self.gen)
        b, a = ba.chunk(2, dim=-1)
        return mixed_qkv, b.contiguous(), a.contiguous()

    @staticmethod
    def seq_bounds(tokens: int, seqs: int):
        """cu_seqlens (int32, on the CPU) for ``seqs`` sequences sharing ``tokens`` tokens."""
        import torch

        return torch.linspace(0, tokens, seqs + 1).round().to(torch.int32)

    def indices(self, n: int, per_seq: int = 1):
        """Mamba cache blocks of ``n`` sequences: ``[n]``, or ``[n, per_seq]`` for speculative slots."""
        import torch

        ids = torch.arange(1, n * per_seq + 1, dtype=torch.int32, device=self.device) % self.blocks
        return ids if per_seq == 1 else ids.view(n, per_seq)

    def uniform_starts(self, n: int, per_seq: int):
        """query_start_loc of ``n`` sequences of ``per_seq`` tokens each."""
        import torch

        return torch.arange(0, (n + 1) * per_seq, per_seq, dtype=torch.int32, device=self.device)


# -- ops --------------------------------------------------------------------------------------------


def gdn_conv_prefill(p: dict[str, Any], device: str) -> None:
    _setup(device)
    import torch
    from vllm.model_executor.layers.mamba.ops.causal_conv1d import causal_conv1d_fn

    layer = _Layer(p, device)
    t, n = p["tokens"], p["num_seqs"]
    mixed_qkv, _, _ = layer.projections(t)
    if p.get("gathered"):  # batches with speculative sequences: index_select gives contiguous rows
        mixed_qkv = mixed_qkv.contiguous()
    has_initial = torch.tensor([i % 2 == 1 for i in range(n)], dtype=torch.bool, device=device)
    causal_conv1d_fn(mixed_qkv.transpose(0, 1), layer.conv_weight, None, activation="silu",
                     conv_states=layer.conv_state, has_initial_state=has_initial, cache_indices=layer.indices(n),
                     query_start_loc=layer.seq_bounds(t, n).to(device))


def _post_conv(layer: _Layer, conv_out, b, a):
    from vllm.third_party.flash_linear_attention.ops.fused_gdn_prefill_post_conv import fused_post_conv_prep

    return fused_post_conv_prep(conv_output=conv_out, a=a, b=b, A_log=layer.A_log, dt_bias=layer.dt_bias,
                                num_k_heads=layer.hk, head_k_dim=layer.k, head_v_dim=layer.v,
                                apply_l2norm=True, output_g_exp=False)


def gdn_post_conv(p: dict[str, Any], device: str) -> None:
    """``fused_post_conv_prep`` on the conv output of a prefill (causal_conv1d_fn returns a new tensor)."""
    _setup(device)
    layer = _Layer(p, device)
    d = p.get("decode_tokens", 0)  # a prefill behind d decode tokens in a mixed batch gets sliced inputs
    mixed_qkv, b, a = layer.projections(d + p["tokens"])
    conv_out = mixed_qkv.contiguous()  # causal_conv1d_fn(x.T).T is a contiguous [T, qkv] tensor
    _post_conv(layer, conv_out[d:], b[d:], a[d:])


def gdn_chunk_prefill(p: dict[str, Any], device: str) -> None:
    """vLLM's FLA chunk pipeline as ``ChunkGatedDeltaRule.forward_native`` calls it (Triton backend)."""
    _setup(device)
    import torch
    from vllm.third_party.flash_linear_attention.ops import chunk_gated_delta_rule
    from vllm.third_party.flash_linear_attention.ops.index import prepare_chunk_indices, prepare_chunk_offsets

    layer = _Layer(p, device)
    t, n = p["tokens"], p["num_seqs"]
    mixed_qkv, b, a = layer.projections(t)
    conv_out = mixed_qkv.contiguous()
    q, k, v, g, beta = (x.unsqueeze(0) for x in _post_conv(layer, conv_out, b, a))
    cu_cpu = layer.seq_bounds(t, n)
    initial_state = layer.ssm_state[layer.indices(n)]
    chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state, output_final_state=True,
                           cu_seqlens=cu_cpu.to(device),
                           chunk_indices=prepare_chunk_indices(cu_cpu, 64).to(device),
                           chunk_offsets=prepare_chunk_offsets(cu_cpu, 64).to(device),
                           use_qk_l2norm_in_kernel=False)


def gdn_conv_update(p: dict[str, Any], device: str) -> None:
    """Decode conv: plain (one token per sequence) or speculative (``num_spec + 1`` tokens per sequence)."""
    _setup(device)
    import torch
    from vllm.model_executor.layers.mamba.ops.causal_conv1d import causal_conv1d_update

    layer = _Layer(p, device)
    batch = p["batch"]
    if p.get("speculative"):
        q_len = layer.num_spec + 1
        mixed_qkv, _, _ = layer.projections(batch * q_len)
        causal_conv1d_update(mixed_qkv, layer.conv_state, layer.conv_weight, None, "silu",
                             conv_state_indices=layer.indices(batch, q_len)[:, 0][:batch],
                             num_accepted_tokens=torch.ones(batch, dtype=torch.int32, device=device),
                             query_start_loc=layer.uniform_starts(batch, q_len),
                             max_query_len=q_len, validate_data=False)
    else:
        mixed_qkv, _, _ = layer.projections(batch)
        causal_conv1d_update(mixed_qkv, layer.conv_state, layer.conv_weight, None, "silu",
                             conv_state_indices=layer.indices(batch), validate_data=p.get("validate", False))


def gdn_packed_decode(p: dict[str, Any], device: str) -> None:
    """Pure-decode batch: conv update in place, then the packed recurrent decode kernel."""
    _setup(device)
    import torch
    from vllm.third_party.flash_linear_attention.ops.fused_recurrent import (
        fused_recurrent_gated_delta_rule_packed_decode,
    )

    layer = _Layer(p, device)
    batch = p["batch"]
    mixed_qkv, b, a = layer.projections(batch)
    out = torch.zeros(batch, layer.hv, layer.v, dtype=layer.dtype, device=device)
    fused_recurrent_gated_delta_rule_packed_decode(
        mixed_qkv=mixed_qkv, a=a, b=b, A_log=layer.A_log, dt_bias=layer.dt_bias, scale=layer.k ** -0.5,
        initial_state=layer.ssm_state, out=out.unsqueeze(1), ssm_state_indices=layer.indices(batch),
        use_qk_l2norm_in_kernel=True)


def gdn_sigmoid_gating_update(p: dict[str, Any], device: str) -> None:
    """Recurrent update for the decode part of a mixed batch, or for speculative sequences."""
    _setup(device)
    import torch
    from vllm.third_party.flash_linear_attention.ops.fused_sigmoid_gating import fused_sigmoid_gating_delta_rule_update

    layer = _Layer(p, device)
    batch = p["batch"]
    q_len = layer.num_spec + 1 if p.get("speculative") else 1
    mixed_qkv, b, a = layer.projections(batch * q_len)
    q, k, v = _split_qkv(layer, mixed_qkv)
    indices = layer.indices(batch, q_len if p.get("speculative") else 1)
    accepted = torch.ones(batch, dtype=torch.int32, device=device) if p.get("speculative") else None
    fused_sigmoid_gating_delta_rule_update(A_log=layer.A_log, a=a, b=b, dt_bias=layer.dt_bias, q=q, k=k, v=v,
                                           initial_state=layer.ssm_state, inplace_final_state=True,
                                           cu_seqlens=layer.uniform_starts(batch, q_len),
                                           ssm_state_indices=indices, num_accepted_tokens=accepted,
                                           use_qk_l2norm_in_kernel=True)


def gdn_checkpoint_export(p: dict[str, Any], device: str) -> None:
    """Prefix-caching "align" mode with FlashInfer's prefill: vLLM's ``MambaPrefillCheckpointExporter``
    stores each prefill checkpoint's conv window and recurrent state (``store_cache_checkpoints_kernel``).

    Its tensors as ``_forward_core`` and ``GDNAttentionMetadataBuilder`` make them: the layer's input
    rows (``gathered``: contiguous, as in batches with speculative sequences), the state views, the
    workspace rows FlashInfer emits into, and ``rows`` sliced out of the one int64 plan tensor after its
    ``num_seqs + 1`` cumulative starts (so its alignment depends on the number of prefill sequences)."""
    _setup(device)
    import torch
    from vllm.model_executor.layers.mamba.checkpoint import (
        MambaPrefillCheckpointExporter,
        MambaPrefillCheckpointMetadata,
    )
    from vllm.v1.attention.backends.gdn_attn import plan_flashinfer_checkpoints

    layer = _Layer(p, device)
    n, every = p["num_seqs"], p["every_n_tokens"]
    lens = [every] * n
    mixed_qkv, _, _ = layer.projections(sum(lens))
    if p.get("gathered"):
        mixed_qkv = mixed_qkv.contiguous()
    offsets = [every] * n
    _every, cu_starts, rows = plan_flashinfer_checkpoints(offsets, lens)
    plan = torch.tensor(cu_starts + rows, dtype=torch.int64).to(device)
    buf = p["checkpoint_buffer"]
    checkpoints = torch.zeros(buf["shape"], dtype=torch_dtype(buf["dtype"]), device=device)[: cu_starts[-1]]
    meta = MambaPrefillCheckpointMetadata(torch.tensor(offsets, dtype=torch.int32).to(device),
                                          layer.indices(n), offsets=offsets, query_lens=lens)
    starts = torch.tensor([0] + [every * (i + 1) for i in range(n)], dtype=torch.int32).to(device)
    MambaPrefillCheckpointExporter(state_len=layer.w - 1).export(
        meta, raw_qkv=mixed_qkv, conv_state=layer.conv_state, cu_seqlens=starts, recurrent_checkpoint=checkpoints,
        recurrent_state=layer.ssm_state, recurrent_rows=plan[len(cu_starts):])


def _split_qkv(layer: _Layer, mixed_qkv):
    """``QwenGatedDeltaNetAttention.rearrange_mixed_qkv``: split and view as [1, T, heads, dim]."""
    import torch

    t, qd, vd = mixed_qkv.size(0), layer.hk * layer.k, layer.hv * layer.v
    q, k, v = torch.split(mixed_qkv, [qd, qd, vd], dim=-1)
    fused = torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)], dim=0)  # one buffer, as vLLM does
    return (fused[: t * qd].view(1, t, -1, layer.k), fused[t * qd: 2 * t * qd].view(1, t, -1, layer.k),
            fused[2 * t * qd:].view(1, t, -1, layer.v))


def gdn_gated_rmsnorm(p: dict[str, Any], device: str) -> None:
    """``RMSNormGated`` (norm before gate) on ``[tokens, HV, V]``: vLLM's ``rmsnorm_fn``."""
    _setup(device)
    import torch
    from vllm.third_party.flash_linear_attention.ops.layernorm_guard import rmsnorm_fn

    dt = torch_dtype(p["dtype"])
    t, hv, dv = p["tokens"], p["num_v_heads"], p["head_v_dim"]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(t, hv, dv, dtype=dt, device=device, generator=gen)
    z = torch.randn(t, hv, dv, dtype=dt, device=device, generator=gen)
    weight = torch.ones(dv, dtype=torch_dtype(p["weight_dtype"]), device=device)
    rmsnorm_fn(x, weight, None, z=z, eps=p["eps"], group_size=None, norm_before_gate=True, activation=p["activation"])


# -- WNA16 MoE ----------------------------------------------------------------------------------------


def _align_block_size(topk_ids, block_m: int, num_experts: int, device: str):
    """Routing buffers: vLLM's ``moe_align_block_size`` where its CUDA op loads, else the same buffers
    built here (sizes from vLLM 0.33's wrapper; contents: each expert's token slots padded to ``block_m``).

    Only the buffer *sizes* enter the kernel's key (``EM`` is ``sorted_token_ids.size(0)``); the
    contents must be valid for a real launch.
    """
    import torch

    if device != "cpu":
        try:
            from vllm.model_executor.layers.fused_moe.moe_align_block_size import moe_align_block_size

            return moe_align_block_size(topk_ids, block_m, num_experts)
        except (ImportError, AttributeError, RuntimeError):
            pass  # vLLM's compiled ops are not loadable next to this torch
    numel = topk_ids.numel()
    padded = numel + num_experts * (block_m - 1)
    if numel < num_experts:
        padded = min(numel * block_m, padded)
    sorted_ids = torch.full((padded,), numel, dtype=torch.int32)
    expert_ids = torch.full((-(-padded // block_m),), -1, dtype=torch.int32)
    flat = topk_ids.flatten().cpu()
    pos = 0
    for e in range(num_experts):
        slots = (flat == e).nonzero().flatten().to(torch.int32)
        if slots.numel() == 0:
            continue
        n_blocks = -(-slots.numel() // block_m)
        sorted_ids[pos: pos + slots.numel()] = slots
        expert_ids[pos // block_m: pos // block_m + n_blocks] = e
        pos += n_blocks * block_m
    post = torch.tensor([pos], dtype=torch.int32)
    return sorted_ids.to(device), expert_ids.to(device), post.to(device)


def wna16_moe_gemm(p: dict[str, Any], device: str) -> None:
    """One GEMM of ``TritonWNA16Experts.apply``: gate/up (``w13``, the model's top_k, no routed weight)
    or down (``w2``, top_k 1, routed weights), with the config vLLM picks for M tokens."""
    _setup(device)
    import torch
    import triton.language as tl
    from vllm.model_executor.layers.fused_moe.fused_moe import (
        invoke_fused_moe_wna16_triton_kernel,
        try_get_optimal_moe_config,
    )

    e, e_align, inter, hidden, top_k = p["num_experts"], p["align_experts"], p["intermediate"], p["hidden"], p["top_k"]
    bits, gs, m = p["bits"], p["group_size"], p["tokens"]
    dt = torch_dtype(p["dtype"])
    per_byte = 8 // bits
    gen = torch.Generator(device=device).manual_seed(0)
    w1_shape, w2_shape = (e, 2 * inter, hidden // per_byte), (e, hidden, inter // per_byte)
    config = try_get_optimal_moe_config(w1_shape, w2_shape, top_k, "int4_w4a16" if bits == 4 else "int8_w8a16", m,
                                        block_shape=[0, gs])
    topk_ids = torch.stack([torch.randperm(e_align, generator=torch.Generator().manual_seed(i))[:top_k]
                            for i in range(m)]).to(torch.int32)
    if e_align != e:  # expert parallel: this rank's experts are the first e of the global ids
        topk_ids = topk_ids % e
    sorted_ids, expert_ids, post = _align_block_size(topk_ids.to(device), config["BLOCK_SIZE_M"], e_align, device)
    compute = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dt]
    if p["gemm"] == "w13":
        a = torch.randn(m, hidden, dtype=dt, device=device, generator=gen)
        b_shape, n, k, call_top_k, weights = w1_shape, 2 * inter, hidden, top_k, None
    else:
        a = torch.randn(m * top_k, inter, dtype=dt, device=device, generator=gen)
        b_shape, n, k, call_top_k = w2_shape, hidden, inter, 1
        weights = torch.rand(m, top_k, dtype=torch.float32, device=device, generator=gen)
    b = torch.randint(0, 255, b_shape, dtype=torch.uint8, device=device, generator=gen)
    c = torch.empty(m, top_k, n, dtype=dt, device=device)
    scale = torch.rand(e, n, k // gs, dtype=dt, device=device, generator=gen) * 0.01
    zp = (torch.randint(0, 255, (e, n * bits // 8, k // gs), dtype=torch.uint8, device=device, generator=gen)
          if p["has_zp"] else None)
    invoke_fused_moe_wna16_triton_kernel(a, b, c, scale, zp, weights, sorted_ids, expert_ids, post,
                                         p["gemm"] == "w2", call_top_k, config, compute_type=compute,
                                         use_int8_w8a16=bits == 8, use_int4_w4a16=bits == 4, block_shape=[0, gs])


def shared_expert_gate(p: dict[str, Any], device: str) -> None:
    """The fused shared-expert gate (vLLM PR #43190 interface) on contiguous ``[tokens, hidden]``."""
    _setup(device)
    import importlib

    import torch

    gate = importlib.import_module(p["module"]).fused_shared_expert_gate
    dt = torch_dtype(p["dtype"])
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(p["tokens"], p["hidden"], dtype=dt, device=device, generator=gen)
    out = torch.randn(p["tokens"], p["hidden"], dtype=dt, device=device, generator=gen)
    weight = torch.randn(1, p["hidden"], dtype=dt, device=device, generator=gen)
    gate(x, weight, out)


def runtime_facts() -> dict:
    """Which vLLM platform answered the kernels' device queries (recorded in the manifest)."""
    from .vllm_platform import PLATFORM_CHOICE

    return {"vllm_platform": PLATFORM_CHOICE["platform"]} if "platform" in PLATFORM_CHOICE else {}


def import_kernels(device: str) -> None:
    """Import the kernel modules the ops use (benchmarks keep imports out of timed regions)."""
    _setup(device)
    import vllm.model_executor.layers.mamba.ops.causal_conv1d  # noqa: F401
    import vllm.third_party.flash_linear_attention.ops  # noqa: F401
    import vllm.third_party.flash_linear_attention.ops.fused_gdn_prefill_post_conv  # noqa: F401
    import vllm.third_party.flash_linear_attention.ops.fused_recurrent  # noqa: F401
    import vllm.third_party.flash_linear_attention.ops.fused_sigmoid_gating  # noqa: F401
    import vllm.third_party.flash_linear_attention.ops.layernorm_guard  # noqa: F401


OPS = {
    "gdn_conv_prefill": gdn_conv_prefill,
    "gdn_post_conv": gdn_post_conv,
    "gdn_chunk_prefill": gdn_chunk_prefill,
    "gdn_conv_update": gdn_conv_update,
    "gdn_packed_decode": gdn_packed_decode,
    "gdn_sigmoid_gating_update": gdn_sigmoid_gating_update,
    "gdn_gated_rmsnorm": gdn_gated_rmsnorm,
    "gdn_checkpoint_export": gdn_checkpoint_export,
    "wna16_moe_gemm": wna16_moe_gemm,
    "shared_expert_gate": shared_expert_gate,
    "fused_moe_experts": vllm_moe.fused_moe_experts,  # vLLM's modular MoE kernel of one layer kind
    "runner_workload": vllm_runner.runner_workload,  # vLLM's V2 runner, started and serving a workload
}
