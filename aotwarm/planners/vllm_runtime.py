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

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..engines import EngineInfo
from ..engines.vllm_runner import DRAFTERS, REQUEST_FEATURES, RequestShape, shape_dicts
from ..engines.vllm_triton_inventory import TritonKernel, v1_kernels
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target

FAMILY = "vllm-runtime"
OP = "vllm.runner_workload"

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


# request feature -> the files whose kernels it reaches first (the gumbel sampler runs for every sampled request)
FEATURE_FILES = {
    "temperature": ("v1/worker/gpu/sample/gumbel.py",),
    "top_k": ("v1/sample/ops/topk_topp_triton.py",),
    "top_p": ("v1/sample/ops/topk_topp_triton.py",),
    "seed": ("v1/worker/gpu/sample/gumbel.py",),
    "min_p": ("v1/worker/gpu/sample/min_p.py",),
    "penalties": ("v1/worker/gpu/sample/penalties.py",),
    "logit_bias": ("v1/worker/gpu/sample/logit_bias.py",),
    "min_tokens": ("v1/worker/gpu/sample/logit_bias.py",),
    "allowed_token_ids": ("v1/worker/gpu/sample/logit_bias.py",),
    "logprobs": ("v1/worker/gpu/sample/logprob.py",),
    "prompt_logprobs": ("v1/worker/gpu/sample/prompt_logprob.py", "v1/worker/gpu/sample/logprob.py"),
    "bad_words": ("v1/worker/gpu/sample/bad_words.py",),
    "structured_output": ("v1/worker/gpu/structured_outputs.py",),
}
RAMP_REQUESTS = 48  # requests of a ramp workload: batches of every size 1..48 (Triton's integer classes: 1, 16k, other)


def _runner_blocker(resolved: dict) -> str | None:
    """Why vLLM's runner cannot be started by ``engines.vllm_runner`` for this config, or None."""
    if not resolved.get("use_v2_model_runner"):
        return "vLLM runs its V1 model runner for this config (use_v2_model_runner=False); the runner harness drives V2"
    if resolved.get("runner_type") != "generate":
        return f"runner type {resolved.get('runner_type')!r}: the runner harness serves generation requests"
    method = resolved.get("speculative_method")
    if method and method not in DRAFTERS:
        return (f"speculative decoding ({method}): the runner harness creates, without their weights, only these "
                f"drafters: {', '.join(DRAFTERS)} (through vLLM's load_eagle_model)")
    if resolved.get("kv_transfer"):
        return "a KV-transfer / offloading config: the runner harness has no KV connector"
    return None


def _ramp(rng: random.Random, features: tuple[str, ...], seed: int, prompt_max: int) -> list[RequestShape]:
    """One request arrives per step and lives a random number of steps: batch sizes rise and fall through
    1..RAMP_REQUESTS, prefills (chunked at the token budget) next to decodes.  Feature sets cycle through: every
    covered feature, none, each one alone, then random halves."""
    sets: list[tuple[str, ...]] = [features, ()] + [(f,) for f in features]
    shapes = []
    for i in range(RAMP_REQUESTS):
        chosen = sets[i] if i < len(sets) else tuple(f for f in features if rng.random() < 0.5)
        shapes.append(RequestShape(arrive=i, prompt_len=rng.randint(1, prompt_max), max_tokens=rng.randint(1, 40),
                                   features=chosen, seed=seed * 1000 + i))
    return shapes


def _full_batch(rng: random.Random, features: tuple[str, ...], seed: int, max_num_seqs: int) -> list[RequestShape]:
    """``max_num_seqs`` short requests at once: the largest decode batches, the token budget in prefill."""
    return [RequestShape(arrive=0, prompt_len=rng.randint(1, 64), max_tokens=rng.randint(2, 8),
                         features=tuple(f for f in features if rng.random() < 0.5), seed=seed * 1000 + i)
            for i in range(max_num_seqs)]


MATRIX_SIZES = (1, 2, 3, 16, 17, 32, 64)  # batch sizes of the matrix groups: Triton's 1 / 16k / other classes
WIDE_SIZES = (65, 128)  # top-k/top-p groups also past the split top-p pipeline's 64-row limit


def _matrix(rng: random.Random, features: tuple[str, ...], seed: int) -> list[RequestShape]:
    """Groups of same-featured requests arriving together (short prompts, two tokens each), one group every three
    steps, so that each batch holds one pattern: every feature alone, all, none, and for top-k / top-p the patterns
    that reach vLLM's Triton top-k/top-p kernels rather than FlashInfer's fused sampler (a greedy or seeded row in
    the batch), top-k rows beside top-p-only rows -- at every size of ``MATRIX_SIZES`` (and ``WIDE_SIZES`` for
    top-k/top-p).  Batch-level choices (a feature's kernel launched or not, its constexpr flags) meet every
    batch-size class."""
    patterns: list[tuple[list[tuple[str, ...]], tuple[int, ...]]] = [([(f,)], MATRIX_SIZES) for f in features]
    patterns += [([features], MATRIX_SIZES), ([()], MATRIX_SIZES)]
    sampling = [f for f in ("top_k", "top_p") if f in features]
    if sampling:
        wide = MATRIX_SIZES + WIDE_SIZES
        both = tuple(sampling)
        patterns += [([(f,), ()], wide) for f in sampling] + [([both, ()], wide)]
        if len(sampling) == 2:
            patterns += [([("top_k",), ("top_p",), ()], wide), ([("top_k",), ("top_p",)], wide)]
        if "seed" in features:
            patterns += [([(f, "seed")], wide) for f in sampling] + [([both + ("seed",)], wide)]
    sampled = ("temperature",) if "temperature" in features else ()

    def with_sampling(fs: tuple[str, ...]) -> tuple[str, ...]:  # top-k/top-p/seed/min_p act on sampled requests
        return tuple(sorted(set(fs) | set(sampled))) if set(fs) & {"top_k", "top_p", "seed", "min_p"} else fs

    shapes: list[RequestShape] = []
    group = 0
    for per_request, sizes in patterns:
        for n in sizes:
            shapes += [RequestShape(arrive=3 * group, prompt_len=rng.randint(1, 32), max_tokens=2,
                                    features=with_sampling(per_request[j % len(per_request)]),
                                    seed=seed * 100000 + len(shapes)) for j in range(n)]
            group += 1
    return shapes


def _prompt_max(resolved: dict) -> int:
    """Longest prompt a workload draws: four token budgets (chunked prefill over several steps), within the model."""
    return min(int(resolved.get("max_model_len", 4096)) - 64, 4 * int(resolved.get("max_num_batched_tokens", 2048)))


def workloads(resolved: dict, features: tuple[str, ...]) -> list[tuple[str, list[RequestShape], str]]:
    """(name, workload, reason) of the family's items: vLLM's start-up, two ramps, the feature matrix, a full
    batch."""
    rng = random.Random(0)
    prompt_max = _prompt_max(resolved)
    return [
        ("start-up", [], "vLLM's start-up: the profiling pass (dummy forward + sampler) and its JIT warm-up"),
        ("ramp-0", _ramp(rng, features, 1, prompt_max),
         f"vLLM's scheduler serving {RAMP_REQUESTS} requests arriving one per step (batch sizes 1..{RAMP_REQUESTS}, "
         f"chunked prefills beside decodes; feature sets: all, none, each alone, random)"),
        ("ramp-1", _ramp(rng, features, 2, prompt_max), "the same with other lengths and feature draws"),
        ("matrix", _matrix(rng, features, 4),
         f"each feature alone, all, none, and top-k/top-p beside greedy / seeded / top-p-only rows: one pattern per "
         f"batch, at batch sizes {', '.join(map(str, MATRIX_SIZES))} (top-k/top-p also "
         f"{', '.join(map(str, WIDE_SIZES))})"),
        ("full-batch", _full_batch(rng, features, 3, int(resolved["max_num_seqs"])),
         f"{resolved['max_num_seqs']} (max_num_seqs) short requests at once: the largest batches"),
    ]


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    resolved = (serving.vllm or {}).get("resolved")
    if resolved is None or "use_v2_model_runner" not in resolved:
        why = "vLLM's runtime kernels are stated from vLLM's resolved config: plan with vLLM 0.33 installed"
        return FamilyCoverage(FAMILY, "not-covered", why, uncovered=[why]), []
    features = serving.request_features if serving.request_features is not None else REQUEST_FEATURES
    blocker = _runner_blocker(resolved)
    config_json = (serving.vllm or {}).get("config_json")
    if blocker is None and not config_json:
        blocker = "the resolution did not record the model's config (re-plan with this aotwarm)"
    items = [] if blocker else [
        WorkItem(f"{FAMILY}:{name}", FAMILY, OP, {"config_json": config_json, "vllm_args": list(serving.vllm_args),
                                                  "workload": shape_dicts(shapes)}, reason)
        for name, shapes, reason in workloads(resolved, features)]
    st = statement(v1_kernels(), resolved)
    coverage = FamilyCoverage(FAMILY, "planned" if items else "not-covered", "", st.cannot_run, uncovered=[])
    _describe(coverage, st, resolved, features, blocker, planned=None)
    return coverage, items


def _describe(coverage: FamilyCoverage, st: Statement, resolved: dict, features: tuple[str, ...],
              blocker: str | None, planned: set[str] | None) -> None:
    """Summary and uncovered lines; ``planned``: kernel ids the probe found the items reach (None: not probed)."""
    runner = "V2" if resolved["use_v2_model_runner"] else "V1"
    head = f"vLLM's v1 tree has {st.kernels} Triton kernels (+{st.helpers} device helpers); runner {runner}: " \
           f"{st.may_run_kernels} may run for this config"
    if blocker:
        coverage.summary = (f"{head}; not planned ({blocker}) -- each compiles on the node at warm-up or on the first "
                            f"request using its feature (listed); the others cannot run here (conditions listed)")
        coverage.uncovered = list(st.may_run)
        return
    reached = "reached (probed)" if planned is not None else "reached when probed"
    left = [f for f in REQUEST_FEATURES if f not in features]
    coverage.summary = (f"{head}; vLLM's own V2 runner, started as a serving process starts it and serving "
                        f"workloads through vLLM's scheduler, plans the keys of the kernels it {reached}: "
                        f"{len(planned) if planned is not None else '?'}; request features covered: "
                        f"{', '.join(features) or 'none'}"
                        + (f"; not covered: {', '.join(left)}" if left else "")
                        + "; the kernels not reached are listed (may run, compile on the node)")
    lines = st.may_run if planned is None else _unreached(st, planned)
    coverage.uncovered = [*(f"requests with {f} (not in --request-features) compile on first use: "
                            f"{', '.join(FEATURE_FILES[f])}" for f in left), *lines]


def _unreached(st: Statement, planned: set[str]) -> list[str]:
    """The statement's may-run lines without the kernels the items reached: each area heading says how many of its
    kernels are left, each file line keeps what is left; areas with nothing left are dropped."""
    out: list[str] = []
    heading, files, left_count = "", [], 0

    def flush() -> None:
        if files:
            why, _, total = heading.rpartition(": ")
            out.append(f"{why}: {left_count} of {total.split(' kernels')[0]} kernels not reached, in {len(files)} "
                       f"files")
            out.extend(files)

    for line in st.may_run:
        if not line.startswith("  "):
            flush()
            heading, files, left_count = line, [], 0
            continue
        where, _, names = line.strip().partition(": ")
        path = where.split(" (", 1)[0]
        left = [n for n in names.split(" (+", 1)[0].split(", ") if f"{path}:{n}" not in planned]
        if left and left != ["no launched kernel"]:
            files.append(f"  {where}: {', '.join(left)}")
            left_count += len(left)
    flush()
    return out


def after_probe(coverage: FamilyCoverage, items: list[WorkItem], serving: ServingArgs) -> None:
    """Restate the family with what the probe found the items reach."""
    resolved = (serving.vllm or {}).get("resolved") or {}
    if not items or not resolved:
        return
    ids: dict[str, list[str]] = {}
    for k in v1_kernels():  # the probe reports names: a name two files share is the one that may run here
        if verdict(k, resolved)[0]:
            ids.setdefault(k.name, []).append(k.id)
    # still ambiguous: stays listed as "may run" (overstating is safe)
    planned = {ids[name][0] for item in items for name in item.kernels if len(ids.get(name, ())) == 1}
    features = serving.request_features if serving.request_features is not None else REQUEST_FEATURES
    _describe(coverage, statement(v1_kernels(), resolved), resolved, features, None, planned)


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    """A random workload through the same runner: random arrivals, lengths and feature mixes."""
    if not items:
        return []
    base = items[0].params
    resolved = (serving.vllm or {}).get("resolved") or {}
    features = serving.request_features if serving.request_features is not None else REQUEST_FEATURES
    n = rng.randint(1, int(resolved.get("max_num_seqs", 64)))
    prompt_max = _prompt_max(resolved)
    shapes = [RequestShape(arrive=rng.randint(0, 2 * n), prompt_len=rng.randint(1, rng.choice([64, prompt_max])),
                           max_tokens=rng.randint(1, 32), features=tuple(f for f in features if rng.random() < 0.5),
                           seed=rng.randrange(1 << 30)) for _ in range(n)]
    return [WorkItem(f"audit/{FAMILY}", FAMILY, OP, {**base, "workload": shape_dicts(shapes)}, "audit sample")]
