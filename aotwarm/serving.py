"""The serving setup a plan is for: from the command line (fla) or from what vLLM itself decides (vLLM).

For the vLLM engine the user gives the arguments of their ``vllm serve`` command after ``--``; a few
aotwarm flags are spelled-out shortcuts for vLLM arguments (``VLLM_ALIASES``).  vLLM then resolves
the whole config (``engines.vllm_resolve``) and ``for_vllm`` takes every serving value from its
answer, never from aotwarm defaults.  fla (transformers) has no serving config: ``for_fla`` uses
aotwarm's flags with the defaults below.
"""

from __future__ import annotations

import json

from .errors import BadInput
from .plan import ServingArgs

FLA_DEFAULTS = {"tp": 1, "max_num_batched_tokens": 8192, "max_num_seqs": 256, "max_prefill_batch": 1}

# aotwarm flag (ServingArgs / click name) -> the vllm serve argument it stands for
VLLM_ALIASES = {
    "tp": "--tensor-parallel-size",
    "dtype": "--dtype",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "max_num_seqs": "--max-num-seqs",
    "mamba_ssm_cache_dtype": "--mamba-ssm-cache-dtype",
    "mamba_cache_dtype": "--mamba-cache-dtype",
    "max_cudagraph_capture_size": "--max-cudagraph-capture-size",
    "gdn_prefill_backend": "--gdn-prefill-backend",
    "moe_backend": "--moe-backend",
}


def vllm_argv(opts: dict, extra: tuple[str, ...] | list[str]) -> list[str]:
    """The vllm serve arguments: aotwarm's shortcut flags spelled out, then the user's own (which win)."""
    argv: list[str] = []
    for name, flag in VLLM_ALIASES.items():
        value = opts.get(name)
        if value is not None and value != "auto":
            argv += [flag, str(value)]
    if opts.get("enforce_eager"):
        argv.append("--enforce-eager")
    if opts.get("ep"):
        if opts.get("tp") not in (None, opts["ep"]):
            raise BadInput(f"--ep {opts['ep']} with --tp {opts['tp']}: vLLM's expert-parallel size is its "
                           f"tensor x data parallel size; give --tp {opts['ep']} (or pass vLLM's own arguments "
                           f"after --)")
        if opts.get("tp") is None:
            argv += ["--tensor-parallel-size", str(opts["ep"])]
        argv.append("--enable-expert-parallel")
    if opts.get("num_speculative_tokens"):
        argv += ["--speculative-config",
                 json.dumps({"method": "mtp", "num_speculative_tokens": opts["num_speculative_tokens"]})]
    return argv + list(extra)


def for_vllm(decisions: dict, families: tuple[str, ...], opts: dict) -> ServingArgs:
    """ServingArgs filled from vLLM's own resolution of the serving config."""
    r = decisions["resolved"]
    gdn = decisions.get("gdn") or {}
    ep = r["tensor_parallel_size"] * r["data_parallel_size"] if r["enable_expert_parallel"] else 1
    return ServingArgs(
        engine="vllm", families=families, tp=r["tensor_parallel_size"], dtype=r["dtype"],
        max_num_batched_tokens=r["max_num_batched_tokens"], max_num_seqs=r["max_num_seqs"],
        mamba_ssm_cache_dtype=gdn.get("ssm_state_dtype", r["mamba_ssm_cache_dtype"]),
        mamba_cache_dtype=gdn.get("conv_state_dtype", r["mamba_cache_dtype"]),
        num_speculative_tokens=r["num_speculative_tokens"],
        max_cudagraph_capture_size=r["max_cudagraph_capture_size"], enforce_eager=r["enforce_eager"],
        gdn_prefill_backend=gdn.get("prefill_backend", "auto"), ep=ep,
        moe_backend=opts.get("moe_backend") or "auto", deep_gemm_e8m0=opts.get("deep_gemm_e8m0", True),
        vllm_args=tuple(decisions["argv"]), vllm=decisions, request_features=request_features(opts))


def request_features(opts: dict) -> tuple[str, ...] | None:
    """``--request-features``: comma-separated names (``all``, the default; ``none``) -> the covered set."""
    from .engines.vllm_runner import REQUEST_FEATURES

    text = (opts.get("request_features") or "all").strip()
    if text == "all":
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in REQUEST_FEATURES]
    if unknown:
        raise BadInput(f"unknown request feature(s) {', '.join(unknown)} in --request-features: use all, none or "
                       f"a comma-separated list of {', '.join(REQUEST_FEATURES)}")
    return tuple(f for f in REQUEST_FEATURES if f in names)


def for_fla(families: tuple[str, ...], opts: dict, extra: tuple[str, ...]) -> ServingArgs:
    if extra:
        raise BadInput(f"arguments after -- are vllm serve arguments; the fla engine has none ({' '.join(extra)})")
    values = {k: (opts.get(k) if opts.get(k) is not None else v) for k, v in FLA_DEFAULTS.items()}
    return ServingArgs(engine="fla", families=families, dtype=opts.get("dtype"), **values)
