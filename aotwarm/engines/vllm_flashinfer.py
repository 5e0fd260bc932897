"""Which FlashInfer JIT modules vLLM loads, found by running vLLM's own call sites (resolution child).

FlashInfer compiles a CUDA module with nvcc the first time its ``JitSpec.build_and_load()`` runs and no
AOT artifact exists.  Here, inside the resolution child (virtual target GPU, vLLM's own platform and
config), vLLM's call sites run on ``meta`` tensors while ``build_and_load`` is replaced by a recorder:
it notes the spec FlashInfer built (its ``name``), finds the FlashInfer generator function that made it
(a ``gen_*`` function named by the calling FlashInfer code, called again here and checked to give the
same module), and stops the call.  Nothing compiles and nothing about the module is re-derived:

* **sampling**: vLLM's ``flashinfer_sampler_supported()`` decides (env, platform, compute capability,
  SM count, FlashInfer's JIT arch check), then vLLM's ``flashinfer_sample`` runs for the three request
  shapes it handles (top-k only, top-p only, both);
* **FP8 block-scale linears at small M (sm90)**: for every FP8 linear kind whose kernel vLLM chose is a
  FlashInfer one, vLLM's own ``flashinfer_fp8_blockscale_gemm`` entry (FlashInfer's
  ``fp8_blockscale_gemm_sm90``) runs with the layer's own weight and scale tensors.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any, Iterator


class _Recorded(Exception):
    """Raised by the recorder in place of loading (and compiling) a FlashInfer module."""


@contextlib.contextmanager
def recording_modules(found: dict[str, dict]) -> Iterator[None]:
    """Within: every FlashInfer ``JitSpec.build_and_load`` records ``{name: {generator, sources}}`` in
    ``found`` and raises ``_Recorded`` instead of building."""
    import flashinfer.utils
    import torch
    from flashinfer.jit import core

    original = core.JitSpec.build_and_load
    capability = flashinfer.utils.get_compute_capability

    def virtual_capability(device: Any) -> tuple[int, int]:
        # meta tensors stand for tensors on the (virtual) target GPU
        return tuple(torch.cuda.get_device_capability()) if device.type == "meta" else capability(device)

    def record(spec: Any) -> Any:
        caller = inspect.currentframe().f_back  # the FlashInfer function that asked for the module
        found.setdefault(spec.name, {"name": spec.name, **_generator_of(spec, caller)})
        raise _Recorded(spec.name)

    import flashinfer.gemm  # noqa: F401 -- loaded now, so its imported name is replaced below too

    # FlashInfer's modules import the function by name: replace it wherever it was imported
    holders = [m for n, m in list(sys.modules.items())
               if n.startswith("flashinfer") and getattr(m, "get_compute_capability", None) is capability]
    core.JitSpec.build_and_load = record
    for holder in holders:
        holder.get_compute_capability = virtual_capability
    try:
        yield
    finally:
        core.JitSpec.build_and_load = original
        for holder in holders:
            holder.get_compute_capability = capability


def _generator_of(spec: Any, frame: Any) -> dict:
    """The ``gen_*`` function (no arguments) of FlashInfer that gives ``spec``: {"generator": "module:function"},
    or {"generator": None, "why": ...} when none called here reproduces it."""
    import importlib

    module_name = frame.f_globals.get("__name__", "")
    module = importlib.import_module(module_name) if module_name else None
    names = [n for n in frame.f_code.co_names if n.startswith("gen_")]
    for name in names:
        fn = getattr(module, name, None)
        if fn is None:
            continue
        try:
            again = fn()
        except TypeError:
            continue  # a generator with parameters: not reproducible from its name alone
        if again.name == spec.name and [str(s) for s in again.sources] == [str(s) for s in spec.sources]:
            return {"generator": f"{fn.__module__}:{fn.__name__}", "caller": f"{module_name}:{frame.f_code.co_name}"}
    return {"generator": None, "caller": f"{module_name}:{frame.f_code.co_name}",
            "why": f"no argument-free FlashInfer generator among {names or 'none'} reproduces it"}


def _run(found: dict[str, dict], call: Any) -> str | None:
    """Run one vLLM call site under the recorder; None when it reached a module (or finished), else why not."""
    with recording_modules(found):
        try:
            call()
        except _Recorded:
            return None
        except Exception as err:  # noqa: BLE001 -- the reason is reported in the plan
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def sampler_facts(vc: Any) -> dict:
    """vLLM's sampler decision for FlashInfer, and the modules its FlashInfer path loads."""
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import flashinfer_sample, flashinfer_sampler_supported

    try:
        supported = bool(flashinfer_sampler_supported())
        reason = None
    except RuntimeError as err:  # VLLM_USE_FLASHINFER_SAMPLER=1 set and FlashInfer unusable: vLLM refuses to start
        supported, reason = False, str(err)
    facts: dict = {"flashinfer": supported, "reason": reason,
                   "logprobs_mode": str(vc.model_config.logprobs_mode),
                   "runner": "v2" if getattr(vc, "use_v2_model_runner", False) else "v1", "modules": {}, "errors": []}
    if not supported:
        return facts
    vocab = int(vc.model_config.get_vocab_size())
    batch = int(vc.scheduler_config.max_num_seqs)
    logits = torch.empty(batch, vocab, dtype=torch.float32, device="meta")
    k = torch.empty(batch, dtype=torch.int32, device="meta")
    p = torch.empty(batch, dtype=torch.float32, device="meta")
    for label, kk, pp in (("top-k", k, None), ("top-p", None, p), ("top-k+top-p", k, p)):
        found: dict[str, dict] = {}
        why = _run(found, lambda: flashinfer_sample(logits, kk, pp))
        if why:
            facts["errors"].append(f"{label}: {why}")
        for name, module in found.items():
            facts["modules"].setdefault(name, {**module, "requests": []})["requests"].append(label)
    return facts


def fp8_linear_facts(model: Any) -> dict:
    """For each FP8 linear kind whose vLLM kernel is a FlashInfer one: the modules FlashInfer loads for it."""
    import torch

    from vllm.utils.flashinfer import flashinfer_fp8_blockscale_gemm, is_flashinfer_fp8_blockscale_gemm_supported

    facts: dict = {"supported": bool(is_flashinfer_fp8_blockscale_gemm_supported()), "modules": {}, "layers": 0,
                   "errors": []}
    seen: set[tuple] = set()
    for name, module in model.named_modules():
        kernel = getattr(getattr(module, "quant_method", None), "fp8_linear", None)
        if kernel is None or "FlashInfer" not in type(kernel).__name__:
            continue
        facts["layers"] += 1
        weight, scale = module.weight, getattr(module, "weight_scale_inv", None)
        if scale is None:
            scale = getattr(module, "weight_scale", None)
        key = (tuple(weight.shape), type(kernel).__name__)
        if key in seen:
            continue
        seen.add(key)
        x = torch.empty(1, weight.shape[1], dtype=torch.bfloat16, device="meta")
        found: dict[str, dict] = {}
        why = _run(found, lambda: flashinfer_fp8_blockscale_gemm(input=x, weight=weight, weight_scale=scale,
                                                                 out_dtype=torch.bfloat16))
        if why:
            facts["errors"].append(f"{name}: {why}")
        for mod_name, found_module in found.items():
            entry = facts["modules"].setdefault(mod_name, {**found_module, "kernels": [], "shapes": []})
            if type(kernel).__name__ not in entry["kernels"]:
                entry["kernels"].append(type(kernel).__name__)
            entry["shapes"].append([int(weight.shape[0]), int(weight.shape[1])])
    return facts


def flashinfer_facts(model: Any, vc: Any) -> dict:
    """Both call sites' answers, and FlashInfer's identity as the resolution saw it.  ``has_flashinfer`` is vLLM's
    own gate for its FlashInfer kernels (flashinfer-cubin, or nvcc and ninja present): it holds here, where the
    plan is made; a node without them runs vLLM's other kernels for those call sites."""
    import flashinfer
    from vllm.utils.flashinfer import has_flashinfer

    return {"version": getattr(flashinfer, "__version__", None), "has_flashinfer": bool(has_flashinfer()),
            "sampler": sampler_facts(vc), "fp8_blockscale": fp8_linear_facts(model)}
