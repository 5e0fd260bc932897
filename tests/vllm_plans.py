"""Plans for the vLLM engine in tests: the serving config resolved by vLLM itself (as ``aotwarm plan`` does).

Resolutions run vLLM's config code in a child process (``engines.vllm_resolve``) and are cached on disk
per (vLLM files, config, arguments, target); a machine where vLLM's compiled ops cannot load (a CPU-only
torch: the Triton 3.6 test leg) skips the tests that need one.
"""

from __future__ import annotations

import functools

import pytest

from aotwarm import serving as serving_mod
from aotwarm.model import load_model
from aotwarm.planners import families_for, make_plan
from aotwarm.targets import resolve_target


@functools.lru_cache(maxsize=None)
def decisions(path: str, gpu: str, argv: tuple[str, ...]) -> dict:
    from aotwarm.engines.vllm_resolve import resolve_for_source
    from aotwarm.errors import Incompatible

    _, source = load_model(path)
    try:
        return resolve_for_source(source, list(argv), resolve_target(gpu).target)
    except Incompatible as err:
        pytest.skip(f"vLLM's config code cannot run here: {err}")


def vllm_plan(path, *argv: str, gpu: str = "h200", families: tuple[str, ...] = ("gdn",), num_sms: int | None = None):
    """The plan ``aotwarm plan PATH --gpu GPU --family ... -- ARGV`` makes (before probing)."""
    from aotwarm.engines import detect_engine

    spec, src = load_model(str(path))
    d = decisions(str(path), gpu, tuple(argv))
    serving = serving_mod.for_vllm(d, families_for(families, "vllm"), {})
    return make_plan(spec, src, resolve_target(gpu, num_sms), serving, detect_engine("vllm"))
