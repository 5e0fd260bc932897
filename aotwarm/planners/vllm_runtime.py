"""``vllm-runtime``: vLLM's own Triton kernels outside the model's layers -- the model runner's input preparation,
block tables and buffers, the sampler, speculative decoding, mamba state management, KV offloading, pooling and the
attention backends' helpers (everything under ``vllm/v1``).

This aotwarm does not plan them yet; this family states them per plan, so that nothing compiles on the node
without the plan having said so.  Every ``triton.jit`` function of the installed vLLM's ``v1`` tree
(``engines.vllm_triton_inventory``, read from the sources) gets one verdict for the resolved serving config:

* **may run** (not covered): it compiles on the node at warm-up or on the first request that uses its feature;
  listed by area, with the request feature where one decides it;
* **cannot run**, with the condition -- only where the condition is one vLLM itself decided for this config
  (``use_v2_model_runner``, the speculative config, ``is_hybrid``, the runner type, the KV-transfer config) or the
  file is ROCm / XPU only.  Where the rule is not that firm the kernel is listed as *may run*: overstating what
  may compile is safe, understating it is not.

A file of the tree no rule here knows is listed as unclassified (may run) and the inventory test fails on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..engines import EngineInfo
from ..engines.vllm_triton_inventory import TritonKernel, v1_kernels
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target

FAMILY = "vllm-runtime"

# request features of Model Runner V2's sampler files (vLLM's JIT warm-up uses them all once; with it off, the first
# request using one compiles its kernels)
V2_SAMPLE_FEATURES = {
    "penalties.py": "repetition / frequency / presence penalties",
    "min_p.py": "min_p",
    "logit_bias.py": "logit_bias (and min_tokens / allowed_token_ids)",
    "bad_words.py": "bad_words",
    "logprob.py": "logprobs",
    "prompt_logprob.py": "prompt_logprobs",
    "thinking_budget.py": "a reasoning (thinking) token budget",
    "watermark.py": "watermarking",
    "gumbel.py": "sampling (temperature, seeds; every sampled request)",
    "trace_replay.py": "sampler trace replay",
}

V2_SAMPLER_WARMUP = ("Model Runner V2 sampler (vLLM's JIT warm-up compiles these at start-up on every node, one "
                     "batch of requests using every sampling feature; other batch shapes and feature values "
                     "compile on first use)")

Verdict = tuple[bool, str]  # (may run, area or condition)


@dataclass(frozen=True)
class Area:
    """Files of the tree (path prefixes, first match wins) and the condition under which their kernels run."""

    prefixes: tuple[str, ...]
    name: str
    runs: Callable[[dict], Verdict]


def _always(name: str) -> Callable[[dict], Verdict]:
    return lambda r: (True, name)


def _v2(name: str, extra: Callable[[dict], Verdict] | None = None) -> Callable[[dict], Verdict]:
    def runs(r: dict) -> Verdict:
        if not r.get("use_v2_model_runner"):
            return False, "Model Runner V2 only; vLLM runs the V1 runner for this config (use_v2_model_runner=False)"
        return extra(r) if extra else (True, name)
    return runs


def _spec(name: str) -> Callable[[dict], Verdict]:
    def runs(r: dict) -> Verdict:
        if not r.get("speculative_method"):
            return False, "speculative decoding only; no --speculative-config"
        return True, f"{name} ({r['speculative_method']}, {r.get('num_speculative_tokens')} tokens)"
    return runs


def _hybrid(name: str) -> Callable[[dict], Verdict]:
    def runs(r: dict) -> Verdict:
        if r.get("is_hybrid") is False:
            return False, "models with mamba / linear-attention state only; vLLM's is_hybrid=False for this model"
        return True, name
    return runs


def _flag(key: str, name: str, off: str) -> Callable[[dict], Verdict]:
    return lambda r: (True, name) if r.get(key) is not False else (False, off)


AREAS: tuple[Area, ...] = (
    Area(("v1/worker/gpu/spec_decode/",), "V2 speculative decoding",
         _v2("", _spec("Model Runner V2 speculative decoding: drafting, rejection sampling"))),
    Area(("v1/worker/gpu/model_states/mamba_hybrid.py", "v1/worker/gpu/model_states/recoverssm.py"),
         "V2 mamba state", _v2("", _hybrid("Model Runner V2 mamba state (prefix-caching align mode, state copies)"))),
    Area(("v1/worker/gpu/model_states/prompt_embeds.py",), "V2 prompt embeds",
         _v2("", _flag("enable_prompt_embeds", "Model Runner V2 prompt embeddings",
                       "prompt-embeds requests only; --enable-prompt-embeds is off"))),
    Area(("v1/worker/gpu/sample/",), "V2 sampler", _v2("", lambda r: (True, V2_SAMPLER_WARMUP if r.get(
        "enable_jit_warmup") else "Model Runner V2 sampler (JIT warm-up off: each feature compiles on first use)"))),
    Area(("v1/worker/gpu/",), "V2 runner",
         _v2("Model Runner V2 input preparation, block tables, buffers, structured-output masks")),
    Area(("v1/worker/mamba_utils.py",), "mamba state",
         _hybrid("mamba state management (prefix-caching align mode: precopy / postprocess, state copies)")),
    Area(("v1/worker/",), "V1 runner helpers", _always("runner helpers (block tables, KV-block zeroing)")),
    Area(("v1/sample/rejection_sampler.py", "v1/spec_decode/"), "speculative decoding",
         _spec("speculative decoding: rejection sampler and draft utilities")),
    Area(("v1/sample/",), "sampler ops", _always("sampler ops (top-k / top-p)")),
    Area(("v1/attention/",), "attention backends",
         lambda r: (True, "attention backends and their metadata / KV-cache helpers (which run depends on the "
                          f"backends vLLM chose: {', '.join(r.get('attention_backends') or []) or 'none'})")),
    Area(("v1/kv_offload/",), "KV offloading",
         _flag("kv_transfer", "KV offloading", "KV offloading only; no KV-transfer / offloading config")),
    Area(("v1/pool/",), "pooling",
         lambda r: (r.get("runner_type") == "pooling", "pooling models only" if r.get("runner_type") != "pooling"
                    else "pooling (late-interaction rerank)")),
)
PLATFORM_ONLY = ("rocm", "aiter", "xpu")


def verdict(kernel: TritonKernel, resolved: dict) -> Verdict:
    """(may run, why) for one kernel under the resolved config."""
    stem = kernel.path.rsplit("/", 1)[-1]
    if any(token in stem for token in PLATFORM_ONLY):
        return False, "ROCm / XPU only (the target is an NVIDIA GPU)"
    for area in AREAS:
        if kernel.path.startswith(area.prefixes):
            return area.runs(resolved)
    return True, "unclassified: aotwarm has no rule for this file"


def _feature(kernel: TritonKernel) -> str | None:
    if kernel.path.startswith("v1/worker/gpu/sample/"):
        return V2_SAMPLE_FEATURES.get(kernel.path.rsplit("/", 1)[-1])
    if kernel.path == "v1/worker/gpu/structured_outputs.py":
        return "structured output (JSON schema, regex, grammar)"
    return None


@dataclass
class Statement:
    """The family's verdicts: may-run lines (per area, then per file), cannot-run groups and the counts."""

    may_run: list[str]
    cannot_run: list[KernelCoverage]
    kernels: int  # launched kernels (device helpers are compiled inside them)
    helpers: int
    may_run_kernels: int


def statement(kernels: list[TritonKernel], resolved: dict) -> Statement:
    may: dict[str, dict[str, list[TritonKernel]]] = {}  # why -> file (+ feature) -> kernels
    cannot: dict[str, list[str]] = {}
    may_run_kernels = 0
    for kernel in kernels:
        runs, why = verdict(kernel, resolved)
        may_run_kernels += runs and not kernel.helper
        if runs:
            feature = _feature(kernel)
            where = kernel.path + (f" (used by requests with {feature})" if feature else "")
            may.setdefault(why, {}).setdefault(where, []).append(kernel)
        else:
            cannot.setdefault(why, []).append(kernel.id + (" (helper)" if kernel.helper else ""))
    lines: list[str] = []
    for why, files in sorted(may.items()):
        launched = sum(not k.helper for ks in files.values() for k in ks)
        lines.append(f"{why}: {launched} kernels in {len(files)} files")
        for where, ks in sorted(files.items()):
            names = [k.name for k in ks if not k.helper]
            helpers = len(ks) - len(names)
            lines.append(f"  {where}: {', '.join(names) or 'no launched kernel'}"
                         + (f" (+{helpers} device helpers)" if helpers else ""))
    groups = [KernelCoverage(f"{len(ids)} functions", f"cannot run: {why}", ids) for why, ids in sorted(cannot.items())]
    helpers = sum(k.helper for k in kernels)
    return Statement(lines, groups, len(kernels) - helpers, helpers, may_run_kernels)


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    resolved = (serving.vllm or {}).get("resolved")
    if resolved is None or "use_v2_model_runner" not in resolved:
        why = "vLLM's runtime kernels are stated from vLLM's resolved config: plan with vLLM 0.33 installed"
        return FamilyCoverage(FAMILY, "not-covered", why, uncovered=[why]), []
    st = statement(v1_kernels(), resolved)
    runner = "V2" if resolved["use_v2_model_runner"] else "V1"
    summary = (f"vLLM's v1 tree has {st.kernels} Triton kernels (+{st.helpers} device helpers); runner {runner}: "
               f"{st.may_run_kernels} may run for this config, not planned by this aotwarm -- each compiles on the "
               f"node at warm-up or on the first request using its feature (listed); the others cannot run here "
               f"(conditions listed)")
    return FamilyCoverage(FAMILY, "not-covered" if st.may_run_kernels else "not-applicable", summary, st.cannot_run,
                          uncovered=st.may_run), []


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    return []
