"""The virtual node under vLLM's Model Runner V2 (``engines.vllm_runner``): what the runner asks of a GPU driver,
answered on a GPU-less builder, and vLLM's CUDA-graph capture with the recording left out.

Kernels are compiled, not run, on the virtual GPU: what they would have written stays as allocated, so fresh index
tensors are zero-filled (a valid index), large reductions whose values reach no key are left uncomputed, and the one
kernel output the scheduler needs (the rejection sampler's count of sampled tokens) is answered as a GPU would."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator


def zeroed_allocations() -> Any:
    """A torch function mode zero-filling fresh integer CPU tensors: under the virtual GPU kernels are compiled, not
    run, so what they would have written stays zero -- a valid index, a valid count."""
    import torch
    from torch.overrides import TorchFunctionMode

    empties = {torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty}

    class Zeroed(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if (func in empties and isinstance(out, torch.Tensor) and out.device.type == "cpu"
                    and not out.is_floating_point()):  # index tensors; float contents index nothing
                out.zero_()
            return out

    return Zeroed()


def cheap_reductions() -> Any:
    """A torch dispatch mode answering the sampler's big CPU reductions over logits (top-k, sort, softmax) with
    tensors of aten's shapes and dtypes, uncomputed: on the virtual GPU their values reach no kernel key, and a
    prompt-logprobs chunk (thousands of rows x the vocabulary) would cost seconds each."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten

    class CheapReductions(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            x = args[0] if args else None
            if func is aten.topk.default and x.device.type == "cpu":
                k, dim = args[1], (args[2] if len(args) > 2 else kwargs.get("dim", -1))
                shape = list(x.shape)
                shape[dim] = k
                return (torch.empty(shape, dtype=x.dtype), torch.zeros(shape, dtype=torch.int64))
            if func in (aten.sort.default, aten.sort.stable) and x.device.type == "cpu":
                return torch.empty_like(x), torch.zeros(x.shape, dtype=torch.int64)
            if func in (aten._log_softmax.default, aten._softmax.default) and x.device.type == "cpu":
                return torch.empty_like(x, dtype=torch.float32 if args[2] and x.dtype != torch.float64 else x.dtype)
            return func(*args, **kwargs)

    return CheapReductions()


def all_on_meta() -> Any:
    """A torch function mode placing every placed allocation on ``meta`` (vLLM's KV-cache allocation context)."""
    from torch.overrides import TorchFunctionMode

    class AllOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if "device" in kwargs:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    return AllOnMeta()


def virtual_node_runtime() -> None:
    """What vLLM's runner asks of a GPU driver, answered on a GPU-less builder (see the module docstring)."""
    import numpy as np
    import torch
    import vllm.v1.worker.gpu.async_utils as async_utils
    import vllm.v1.worker.gpu.buffer_utils as buffer_utils
    from vllm.platforms import current_platform

    def host_uva_buffer(self: Any, size: Any, dtype: Any) -> None:
        # zeros as the pinned buffer is; numpy's zeros map pages lazily (the request state is max_num_reqs x
        # max_model_len tokens: a GiB that torch.zeros would write)
        try:
            self.cpu = torch.from_numpy(np.zeros(size, dtype=torch.empty((), dtype=dtype).numpy().dtype))
        except TypeError:  # a dtype numpy lacks (bfloat16)
            self.cpu = torch.zeros(size, dtype=dtype)
        self.np = self.cpu.numpy()
        self._uva = self.cpu

    buffer_utils.UvaBuffer.__init__ = host_uva_buffer
    topk_topp_on_the_gpu()
    async_utils.stream = lambda *args, **kwargs: contextlib.nullcontext()
    type(current_platform).get_current_memory_usage = classmethod(lambda cls, device=None: 0)


def presented_on(device: Any) -> type:
    """A tensor subclass whose ``.device`` answers ``device`` (what vLLM's Python checks read); storage, dtype,
    shape, strides and pointers are the tensor's own."""
    import torch

    class PresentedOn(torch.Tensor):
        @property
        def device(self) -> Any:  # noqa: D401
            return device

    return PresentedOn


def topk_topp_on_the_gpu() -> None:
    """vLLM's Triton top-k/top-p module picks its tile sizes, warps and the split top-p pipeline from
    ``logits.device.type`` (``cpu`` tiles are 256 wide, ``cuda`` ones 8192).  On the virtual GPU its tensor arguments
    are presented as the GPU's (``cuda:0``), so it takes the GPU's branches; the result is handed back as a plain
    tensor."""
    import torch
    import vllm.v1.sample.ops.topk_topp_sampler as sampler_ops

    on_gpu = presented_on(torch.device("cuda", 0))
    inner = sampler_ops.apply_top_k_top_p_triton

    def apply(logits: Any, k: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
        as_gpu = (lambda t: t.as_subclass(on_gpu) if isinstance(t, torch.Tensor) else t)
        out = inner(as_gpu(logits), as_gpu(k), as_gpu(p), *args, **kwargs)
        return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out

    if getattr(inner, "__name__", "") != "apply":
        sampler_ops.apply_top_k_top_p_triton = apply


def kv_zeroing_sees_the_caches(runner: Any) -> None:
    """vLLM's KV-block zeroer skips KV caches not on the runner's device; here they are on ``meta`` (their
    geometry and offsets are vLLM's).  While it reads them they are presented on the runner's device, so it plans
    its segments (and its kernel's block size, from the page sizes) as on the node."""
    import torch

    inner = runner._init_kv_zero_meta
    on_runner = presented_on(runner.device)

    def init() -> None:
        layers = runner.compilation_config.static_forward_context
        saved = {name: layer.kv_cache for name, layer in layers.items()
                 if isinstance(getattr(layer, "kv_cache", None), torch.Tensor) and layer.kv_cache.device.type == "meta"}
        for name, kv in saved.items():
            layers[name].kv_cache = kv.as_subclass(on_runner)
        try:
            inner()
        finally:
            for name, kv in saved.items():
                layers[name].kv_cache = kv

    runner._init_kv_zero_meta = init


def accepted_as_on_a_gpu(scheduler: Any, scheduled: Any, output: Any, rng: random.Random) -> None:
    """With speculative decoding the rejection sampler's kernels count each request's sampled tokens; on the
    virtual GPU they do not run and every count reads 0, which no GPU answers for a request past its prompt (the
    target's own token is always sampled).  Each such request gets 1 + a random number of its scheduled drafts
    accepted, so the scheduler goes on as in serving (drafts accepted and rejected alike); a request still in its
    prompt (chunked prefill) samples nothing, as on the GPU."""
    drafts = scheduled.scheduled_spec_decode_tokens
    for i, rid in enumerate(output.req_ids):
        request = scheduler.requests.get(rid)
        if output.sampled_token_ids[i] or request is None or request.num_computed_tokens < request.num_prompt_tokens:
            continue
        output.sampled_token_ids[i] = [0] * (1 + rng.randint(0, len(drafts.get(rid, ()))))


@contextlib.contextmanager
def graphs_recorded_eagerly(virtual: bool) -> Iterator[None]:
    """vLLM's CUDA-graph capture with the recording left out: each descriptor's warm-up pass and capture pass run
    as vLLM runs them (its dummy inputs, its persistent buffers, the drafter's sampling and input updates), so
    every kernel a captured graph holds is launched -- and compiled -- with the arguments the graph records; the
    graph itself is not recorded and its replay launches nothing (a replay compiles nothing on a node either).
    The model forward inside is the harness's stand-in.  On the virtual GPU the capture's memory accounting reads
    a constant free size (nothing is allocated on the device)."""
    import torch
    import vllm.v1.worker.gpu.cudagraph_utils as cg

    class Unrecorded:
        def replay(self) -> None:
            pass

    saved = (cg.graph_capture, cg.capture_pool, cg.CudaGraphManager._capture_stream, torch.cuda.CUDAGraph,
             torch.cuda.graph, torch.accelerator.get_memory_info, torch.accelerator.empty_cache)
    if virtual:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.accelerator.get_memory_info = lambda *args, **kwargs: (total, total)
        torch.accelerator.empty_cache = lambda: None
    cg.graph_capture = lambda *args, **kwargs: contextlib.nullcontext()
    cg.capture_pool = lambda pool, *args, **kwargs: contextlib.nullcontext(pool)
    cg.CudaGraphManager._capture_stream = lambda self, desc: None
    torch.cuda.CUDAGraph = Unrecorded
    torch.cuda.graph = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        yield
    finally:
        (cg.graph_capture, cg.capture_pool, cg.CudaGraphManager._capture_stream, torch.cuda.CUDAGraph,
         torch.cuda.graph, torch.accelerator.get_memory_info, torch.accelerator.empty_cache) = saved
