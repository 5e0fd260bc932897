"""vLLM's Model Runner V2 and its scheduler, run on the virtual node: the runtime kernels (input preparation,
block tables, staged buffer writes, the sampler and its per-request features, mamba state management) as the
serving process launches them.

Nothing of the runner is re-derived.  vLLM's own objects run, in the order a serving process calls them:
``create_engine_config`` -> the model built by vLLM's loader on ``meta`` -> ``GPUModelRunner(vllm_config,
device)`` (with a speculative config: vLLM's speculator, ``init_speculator``) -> its ``load_model(model=...)``
(sampler, rejection sampler, request state, model state as vLLM builds them; an MTP drafter created by
vLLM's ``load_eagle_model`` on ``meta``, sharing the target's embedding and LM head) -> the start-up profiling pass
of ``profile_run`` (a dummy forward, the drafter's proposal, ``_dummy_sampler_run``) -> the engine core's KV-cache
sizing (``EngineCore._initialize_kv_caches``) with ``Worker.initialize_from_config`` on this runner (KV caches,
block tables, the KV-zeroing metadata where vLLM needs it) -> the worker's V2 warm-up: vLLM's JIT warm-up
(``warmup_kernels``, when ``kernel_config.enable_jit_warmup``), then ``capture_model`` (target and drafter graphs,
each descriptor's passes run eagerly, not recorded).  Requests are then served by vLLM's own scheduler class
(``scheduler_config.get_scheduler_cls()``, with the engine core's block hasher): ``schedule`` ->
``execute_model`` -> ``sample_tokens`` -> ``update_from_output``, one step at a time.

What does not run, and why it cannot change a runtime kernel's key:

* the model's (and the drafter's) forward and logits: the forward returns hidden states of vLLM's shape and dtype;
  the logits and the input embeddings are vLLM's own ``compute_logits`` / ``embed_input_ids`` run on ``meta``
  (their exact shape, strides and dtype) and materialised on the runner's device (random values on a GPU);
* attention metadata (``model_state.prepare_attn``, the drafter's ``_build_attn_metadata``): the attention and GDN
  backends' builders, whose kernels are planned (or stated) by their own families;
* FlashInfer's fused top-k/top-p sampler: a FlashInfer module (the ``flashinfer`` family), not Triton; it answers
  token 0 here;
* recording CUDA graphs: capture's passes run (their kernels compile with the arguments the graphs hold), no graph
  is recorded and a replay launches nothing; the profiling capture that sizes graph memory before the KV caches
  (``profile_cudagraph_memory``: a subset of the same descriptors), the compile-size warm-up forwards (the
  model's) and ``kernel_warmup`` (DeepGEMM / FlashInfer: their families) are not run; nor is the vision encoder's
  profiling;
* structured-output grammars: the runner receives vLLM's ``GrammarOutput`` (an all-allowed bitmask, as vLLM's
  warm-up builds it) for the requests marked structured; no grammar is compiled.

On a GPU-less builder (device ``cpu``) the virtual node also needs: host memory for vLLM's UVA buffers (the GPU
reads them in place; here the CPU tensor is the view), KV caches on ``meta`` (the engine sizes them for the whole
GPU), no memory-usage query, no stream switches, and zero-filled fresh tensors: the kernels do not run, so an index
tensor a kernel would have written is all zeros (a valid index) instead of garbage.  For the same reason the
rejection sampler's count of accepted tokens reads 0, which no GPU answers; the scheduler is told 1 + a random
number of each request's drafts were accepted.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from .vllm_runner_node import (accepted_as_on_a_gpu, all_on_meta, cheap_reductions, graphs_recorded_eagerly,
                               kv_zeroing_sees_the_caches, virtual_node_runtime, zeroed_allocations)

# speculative methods whose V2 drafter this harness creates without weights (vLLM builds it through
# load_eagle_model), with the speculator class vLLM picks for it; EAGLE / EAGLE-3 load the same way but need the draft
# model's own config.json and were not run: stated until they are
DRAFTERS = {"mtp": "MTPSpeculator"}

# request features a workload can use: what vLLM's OpenAI-compatible server accepts per request, named as in its API
REQUEST_FEATURES = ("temperature", "top_k", "top_p", "seed", "min_p", "penalties", "logit_bias", "min_tokens",
                    "allowed_token_ids", "logprobs", "prompt_logprobs", "bad_words", "structured_output")


@dataclass(frozen=True)
class RequestShape:
    """One request of a workload: when it arrives (scheduler step), its prompt and output lengths, and the request
    features it uses (``REQUEST_FEATURES``; the values are drawn from ``seed``)."""

    arrive: int
    prompt_len: int
    max_tokens: int
    features: tuple[str, ...]
    seed: int

    @classmethod
    def from_dict(cls, d: dict) -> "RequestShape":
        return cls(d["arrive"], d["prompt_len"], d["max_tokens"], tuple(d["features"]), d["seed"])


def sampling_params(shape: RequestShape, vocab_size: int, max_logprobs: int) -> tuple[Any, bool]:
    """vLLM's ``SamplingParams`` for a request shape (values in the ranges vLLM accepts), and whether the request
    asks for structured output.  Without ``temperature`` the request is greedy."""
    from vllm import SamplingParams

    rng = random.Random(shape.seed)
    f = set(shape.features)
    kw: dict[str, Any] = {"max_tokens": shape.max_tokens, "ignore_eos": True,
                          "temperature": rng.choice([0.3, 0.7, 1.0, 1.5]) if "temperature" in f else 0.0}
    if "top_k" in f:
        kw["top_k"] = rng.choice([1, 2, 5, 20, 50, 100, 1000])
    if "top_p" in f:
        kw["top_p"] = rng.choice([0.1, 0.5, 0.9, 0.95])
    if "seed" in f:
        kw["seed"] = rng.randrange(1 << 31)
    if "min_p" in f:
        kw["min_p"] = rng.choice([0.01, 0.05, 0.2])
    if "penalties" in f:
        kind = rng.choice(["repetition_penalty", "frequency_penalty", "presence_penalty", "all"])
        for name in (["repetition_penalty", "frequency_penalty", "presence_penalty"] if kind == "all" else [kind]):
            kw[name] = 1.1 if name == "repetition_penalty" else rng.choice([-0.5, 0.3, 1.0])
    if "logit_bias" in f:
        kw["logit_bias"] = {rng.randrange(vocab_size): rng.uniform(-10, 10) for _ in range(rng.randint(1, 20))}
    if "min_tokens" in f:
        kw["min_tokens"] = rng.randint(1, shape.max_tokens)
    if "allowed_token_ids" in f:
        kw["allowed_token_ids"] = sorted({rng.randrange(vocab_size) for _ in range(rng.randint(1, 64))})
    if "logprobs" in f:
        kw["logprobs"] = rng.randint(0, max_logprobs)
    if "prompt_logprobs" in f:
        kw["prompt_logprobs"] = rng.randint(0, max_logprobs)
    params = SamplingParams(**kw)
    if "bad_words" in f:  # what the server's tokenizer turns `bad_words` strings into: token-id sequences
        params._bad_words_token_ids = [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 3))]
                                       for _ in range(rng.randint(1, 4))]
    return params, "structured_output" in f


class _NoEncoderBudget:
    """The scheduler's multimodal budget for text-only requests (vLLM's reads the image processor's files)."""

    encoder_compute_budget = 0
    encoder_cache_size = 0
    mm_max_toks_per_item: dict = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class V2Runner:
    """vLLM's ``GPUModelRunner`` (Model Runner V2) for ``vllm serve`` of ``config_json`` with ``argv``, on ``device``
    (``cpu``: the virtual GPU of this process; ``cuda``: a real one), started as a serving process starts it."""

    def __init__(self, config_json: str, argv: list[str], device: str):
        import torch

        from .vllm_platform import setup_worker_device

        setup_worker_device(device)  # first: vLLM's modules bind the current platform when imported
        from vllm.config import set_current_vllm_config
        from vllm.platforms import current_platform
        from vllm.v1.engine.core import EngineCore
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner
        from vllm.v1.worker.workspace import init_workspace_manager, is_workspace_manager_initialized

        from .vllm_node import process_groups
        from .vllm_resolve import _build_model, _engine_config, _Node

        self.device = torch.device(device)
        self.virtual = self.device.type == "cpu"
        if self.virtual:
            virtual_node_runtime()
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="aotwarm-runner-"))
        (Path(tmp) / "config.json").write_text(config_json)
        self.vc = vc = _engine_config(tmp, list(argv))
        if not vc.use_v2_model_runner:
            raise ValueError("vLLM runs its V1 model runner for this config; this harness drives Model Runner V2")
        self._stack.enter_context(process_groups(vc))
        self._stack.enter_context(set_current_vllm_config(vc))
        model = _build_model(vc)
        current_platform.update_block_size_for_backend(vc)
        if not is_workspace_manager_initialized():  # as the GPU worker does at start-up
            init_workspace_manager(self.device)
        self.runner = runner = GPUModelRunner(vc, self.device)
        drafter = type(runner.speculator).__name__
        if runner.speculator is not None and drafter not in DRAFTERS.values():
            raise ValueError(f"vLLM's speculator {drafter}: this harness creates only {', '.join(DRAFTERS.values())}")
        if self.virtual:
            kv_zeroing_sees_the_caches(runner)
        self._stand_in_forward(model, vc.model_config.get_hidden_size())
        with self._drafter_on_meta():
            runner.load_model(model=model)
        speculator = runner.speculator
        if getattr(speculator, "model", None) is not None:
            self._stand_in_forward(speculator.model, speculator.draft_model_config.get_hidden_size())
            # the drafter's attention metadata: its backends' (as the target's prepare_attn); an empty mapping, so
            # the slot-mapping kernels the drafter runs between its steps still run
            speculator._build_attn_metadata = lambda *args, **kwargs: {}
            speculator._update_draft_decode_metadata = lambda *args, **kwargs: None
        runner.model_state.prepare_attn = lambda *args, **kwargs: None  # the backends' families
        import vllm.v1.worker.gpu.sample.sampler as sampler_module

        sampler_module.flashinfer_sample = lambda logits, k, p: torch.zeros(
            logits.shape[0], dtype=torch.int64, device=logits.device)
        self.vocab_size = vc.model_config.get_vocab_size()
        with self._zeroed():
            self._profile_pass()
        node = _Node(vc, int(torch.cuda.get_device_properties(0).total_memory
                             * vc.cache_config.gpu_memory_utilization))
        node.model_runner = runner
        virtual = self.virtual
        node._maybe_get_memory_pool_context = lambda tag: (all_on_meta() if virtual and tag == "kv_cache"
                                                           else contextlib.nullcontext())
        EngineCore._initialize_kv_caches(node, vc)
        self.kv_cache_config = runner.kv_cache_config
        self._scheduler_parts = self._scheduler_factory()

    # -- the model's stand-ins ------------------------------------------------------------------------------------
    def _materialise(self, meta: Any) -> Any:
        import torch

        out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=self.device)
        if not self.virtual and out.is_floating_point():
            out.normal_()
        return out

    def _on_meta(self, fn: Any) -> Any:
        """``fn`` (a model's own method) run on ``meta`` copies of its arguments, its result materialised."""
        import torch

        def to_meta(x: Any) -> Any:
            return (torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
                    if isinstance(x, torch.Tensor) else x)

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._materialise(fn(*map(to_meta, args), **{k: to_meta(v) for k, v in kwargs.items()}))
        return run

    def _stand_in_forward(self, model: Any, hidden: int) -> None:
        """The model's forward answers hidden states of vLLM's shape and dtype; its logits, input embeddings (and a
        drafter's local top tokens) are its own methods run on ``meta``."""
        import torch

        dtype, device = self.vc.model_config.dtype, self.device

        def forward(*args: Any, positions: Any = None, **kwargs: Any) -> Any:
            return torch.empty(positions.shape[-1], hidden, dtype=dtype, device=device)

        model.forward = forward
        if hasattr(model, "do_not_compile"):  # a @support_torch_compile class: call the stand-in, trace nothing
            model.do_not_compile = True
        for name in ("compute_logits", "embed_input_ids", "get_top_tokens"):
            if hasattr(model, name):
                setattr(model, name, self._on_meta(getattr(model, name)))

    @contextlib.contextmanager
    def _drafter_on_meta(self) -> Iterator[None]:
        """While the runner loads the model: an MTP drafter is created by vLLM's loader
        on ``meta`` (``load_eagle_model`` shares the target's embedding and LM head as in serving); its weights
        are not read."""
        import vllm.v1.worker.gpu.spec_decode.eagle.utils as eagle_utils

        from .vllm_resolve import _build_model

        saved = eagle_utils.get_model
        eagle_utils.get_model = lambda *, vllm_config, model_config: _build_model(vllm_config, model_config)
        try:
            yield
        finally:
            eagle_utils.get_model = saved

    @contextlib.contextmanager
    def _zeroed(self) -> Iterator[None]:
        if not self.virtual:
            yield
            return
        with zeroed_allocations(), cheap_reductions():
            yield

    # -- start-up -------------------------------------------------------------------------------------------------
    def _profile_pass(self) -> None:
        """``profile_run`` without the vision encoder's profiling: vLLM's dummy forward at the token budget and
        ``_dummy_sampler_run`` (default pass, then ``SamplingParams.for_sampler_warmup()`` for every request)."""
        import torch

        runner = self.runner
        with torch.inference_mode():
            _, sample_hidden = runner._dummy_run(runner.max_num_tokens, skip_attn=True, is_profile=True)
            if runner.is_last_pp_rank and runner.pooling_runner is None:
                runner._dummy_sampler_run(sample_hidden)

    def start_up(self) -> None:
        """The GPU worker's V2 start-up after the KV caches (``Worker._compile_or_warm_up_model``): vLLM's JIT warm-up
        when ``kernel_config.enable_jit_warmup`` is on, then CUDA-graph capture unless ``enforce_eager`` -- the
        runner's ``capture_model`` (the target's graphs, then the drafter's) over vLLM's capture descriptors, each
        pass run as capture runs it, eagerly (see ``graphs_recorded_eagerly``)."""
        from vllm.v1.worker.gpu.warmup import warmup_kernels

        runner = self.runner
        with self._zeroed():
            if self.vc.kernel_config.enable_jit_warmup:
                warmup_kernels(runner, runner.execute_model, runner.sample_tokens)
            if not self.vc.model_config.enforce_eager and runner.cudagraph_manager is not None:
                with graphs_recorded_eagerly(self.virtual):
                    runner.capture_model()

    # -- serving --------------------------------------------------------------------------------------------------
    def _scheduler_factory(self) -> tuple:
        from vllm.utils.hashing import get_hash_fn_by_name
        from vllm.v1.core.kv_cache_utils import (get_request_block_hasher, init_none_hash,
                                                 resolve_kv_cache_block_sizes)

        vc = self.vc
        block_size, hash_block_size = resolve_kv_cache_block_sizes(self.kv_cache_config, vc)
        hasher = None
        if vc.cache_config.enable_prefix_caching:  # as the engine core builds it
            hash_fn = get_hash_fn_by_name(vc.cache_config.prefix_caching_hash_algo)
            init_none_hash(hash_fn)
            hasher = get_request_block_hasher(hash_block_size, hash_fn, vc.num_hash_lookahead_tokens)
        return block_size, hash_block_size, hasher

    def _scheduler(self) -> Any:
        import vllm.v1.core.sched.scheduler as scheduler_module
        from vllm.v1.structured_output import StructuredOutputManager

        block_size, hash_block_size, _ = self._scheduler_parts
        saved = scheduler_module.MultiModalBudget
        scheduler_module.MultiModalBudget = _NoEncoderBudget
        try:
            return self.vc.scheduler_config.get_scheduler_cls()(
                vllm_config=self.vc, kv_cache_config=self.kv_cache_config,
                structured_output_manager=StructuredOutputManager(self.vc), block_size=block_size,
                hash_block_size=hash_block_size)
        finally:
            scheduler_module.MultiModalBudget = saved

    def serve(self, workload: list[RequestShape], max_steps: int = 10_000) -> dict:
        """Serve the workload with vLLM's scheduler, one step at a time; returns what ran (steps, batch sizes)."""
        import numpy as np
        import torch
        from vllm.v1.core.sched.output import GrammarOutput
        from vllm.v1.request import Request

        scheduler = self._scheduler()
        hasher = self._scheduler_parts[2]
        max_logprobs = self.vc.model_config.max_logprobs
        pending = sorted(workload, key=lambda s: s.arrive)
        structured: set[str] = set()
        width = (self.vocab_size + 31) // 32
        steps, batches = 0, []
        rng = random.Random(sum(s.seed for s in workload))
        with torch.inference_mode(), self._zeroed():
            while (pending or scheduler.has_requests()) and steps < max_steps:
                while pending and pending[0].arrive <= steps:
                    shape = pending.pop(0)
                    params, wants_grammar = sampling_params(shape, self.vocab_size, max_logprobs)
                    rid = f"w{shape.seed}-{shape.arrive}-{len(pending)}"
                    if wants_grammar:
                        structured.add(rid)
                    scheduler.add_request(Request(rid, list(range(1, shape.prompt_len + 1)), params, None,
                                                  block_hasher=hasher))
                out = scheduler.schedule()
                steps += 1
                if out.total_num_scheduled_tokens == 0:
                    scheduler.update_from_output(out, self.runner.execute_model(out))
                    continue
                batches.append([len(out.num_scheduled_tokens), out.total_num_scheduled_tokens])
                result = self.runner.execute_model(out)
                if result is None:
                    # all-allowed rows, `decode_query_len` per request (as vLLM's warm-up builds them); with
                    # drafts, how many of them the grammar accepted, drawn
                    ids = [r for r in out.num_scheduled_tokens if r in structured]
                    rows = len(ids) * self.runner.decode_query_len
                    acceptable = [rng.randint(0, len(out.scheduled_spec_decode_tokens.get(r, ()))) for r in ids]
                    grammar = (GrammarOutput(structured_output_request_ids=ids,
                                             grammar_bitmask=np.full((rows, width), -1, dtype=np.int32),
                                             num_acceptable_drafts=acceptable)
                               if ids else None)
                    result = self.runner.sample_tokens(grammar)
                if hasattr(result, "get_output"):
                    result = result.get_output()
                if self.virtual and self.runner.speculator is not None:
                    accepted_as_on_a_gpu(scheduler, out, result, rng)
                scheduler.update_from_output(out, result)
        return {"steps": steps, "batches": batches}

    def close(self) -> None:
        self._stack.close()


@dataclass
class _Cache:
    """The process's one started runner (starting one costs seconds; a build worker runs several workloads)."""

    key: tuple = ()
    runner: V2Runner | None = None


_STARTED = _Cache()


@contextlib.contextmanager
def started(config_json: str, argv: list[str], device: str) -> Iterator[V2Runner]:
    """The started runner for this serving config (kept for the next workload of the same config)."""
    key = (config_json, tuple(argv), device)
    if _STARTED.key != key or _STARTED.runner is None:
        if _STARTED.runner is not None:
            _STARTED.runner.close()
            _STARTED.runner = None
        runner = V2Runner(config_json, argv, device)
        runner.start_up()
        _STARTED.key, _STARTED.runner = key, runner
    yield _STARTED.runner


def runner_workload(p: dict[str, Any], device: str) -> None:
    """Op: vLLM's V2 runner started for the plan's serving config, then serving ``p["workload"]`` (none: start-up
    only) with vLLM's scheduler."""
    with started(p["config_json"], list(p["vllm_args"]), device) as runner:
        workload = [RequestShape.from_dict(d) for d in p.get("workload", [])]
        if workload:
            runner.serve(workload)


def shape_dicts(shapes: list[RequestShape]) -> list[dict]:
    return [asdict(s) for s in shapes]
