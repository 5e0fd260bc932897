"""vllm-runtime: every Triton kernel of vLLM's ``v1`` tree has a verdict in the plan -- may run (listed, with the
request feature that triggers it) or cannot run (with the condition vLLM decided) -- and none is unclassified.

The inventory is checked against a count made another way (decorator lines in the source text, not the AST walk),
and the verdicts against vLLM's own decisions recorded by the resolution (runner V2, speculative config, hybrid)."""

import json
import re

import pytest

from aotwarm.engines.vllm_triton_inventory import TritonKernel, kernels_in, v1_kernels, vllm_root
from aotwarm.planners import vllm_runtime
from aotwarm.plan import ServingArgs
from tests.conftest import requires_vllm_stack
from tests.test_engine_layers import MODELS
from tests.test_planner_moe_vllm import CONFIGS
from tests.vllm_plans import vllm_plan

MTP2 = ("--speculative-config", json.dumps({"method": "mtp", "num_speculative_tokens": 2}))


def family(plan):
    return next(f for f in plan.families if f.family == "vllm-runtime")


def verdict_ids(fam) -> tuple[set[str], set[str]]:
    """(may run, cannot run) kernel ids ("path:name") from the family's statement."""
    may, path = set(), None
    for line in fam.uncovered:
        if line.startswith("  "):
            path, _, names = line.strip().partition(": ")
            path = path.split(" (used by ", 1)[0]
            may |= {f"{path}:{n}" for n in names.split(" (+", 1)[0].split(", ") if n != "no launched kernel"}
    cannot = {c.removesuffix(" (helper)") for k in fam.kernels for c in k.classes}
    return may, cannot


@requires_vllm_stack
def test_inventory_equals_the_decorator_lines_of_vllms_v1_tree():
    root = vllm_root()
    text_count = sum(len(re.findall(r"^\s*@triton\.jit\b", f.read_text(errors="replace"), re.M))
                     for f in (root / "v1").rglob("*.py"))
    kernels = v1_kernels()
    assert len(kernels) == text_count > 150
    assert len({k.id for k in kernels}) >= len(kernels) - 10  # a few files define two nested `kernel`s
    # device helpers are inlined, never launched: gumbel's hashing helpers, the attention helpers module
    helpers = {k.id for k in kernels if k.helper}
    assert "v1/worker/gpu/sample/gumbel.py:_gumbel_sample_kernel" not in helpers
    assert any(h.startswith("v1/attention/ops/triton_attention_helpers.py:") for h in helpers)


def test_helpers_are_the_functions_other_jit_functions_call():
    src = ("import triton\n@triton.jit\ndef helper(x):\n    return x\n"
           "@triton.jit(do_not_specialize=['n'])\ndef kernel(p, n):\n    helper(p)\n"
           "def host():\n    kernel[(1,)](0, 1)\n")
    found, calls = kernels_in(src, "v1/x.py")
    assert [k.name for k in found] == ["helper", "kernel"] and "helper" in calls and "kernel" not in calls


@requires_vllm_stack
@pytest.mark.parametrize("path,argv", MODELS, ids=[p.stem for p, _ in MODELS])
def test_every_v1_kernel_has_one_verdict(path, argv):
    plan = vllm_plan(path, *argv, families=("all",))  # the engine-layers test's resolutions (cached)
    fam = family(plan)
    may, cannot = verdict_ids(fam)
    launched = {k.id for k in v1_kernels() if not k.helper}
    every = {k.id for k in v1_kernels()}
    assert not may & cannot and launched <= may | cannot <= every
    assert not [ln for ln in fam.uncovered if "unclassified" in ln]
    assert fam.status == "not-covered" and "may run for this config" in fam.summary


@requires_vllm_stack
def test_qwen35_defaults_v2_runner_hybrid_no_spec():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3.5-9B.json", families=("all",))
    resolved = ServingArgs.from_dict(plan.serving).vllm["resolved"]
    assert resolved["use_v2_model_runner"] and resolved["is_hybrid"]  # vLLM's decisions
    fam = family(plan)
    may, cannot = verdict_ids(fam)
    text = "\n".join(fam.uncovered)
    assert "v1/worker/gpu/input_batch.py:_prepare_prefill_inputs_kernel" in may
    assert "v1/worker/mamba_utils.py:postprocess_mamba_fused_kernel" in may  # hybrid: prefix-caching align mode
    for feature in ("logprobs", "prompt_logprobs", "min_p", "bad_words", "logit_bias", "penalties", "structured"):
        assert f"requests with {feature}" in text or feature in text, feature
    spec = [k for k in fam.kernels if "speculative decoding only" in k.covers]
    assert spec and all(i.startswith(("v1/worker/gpu/spec_decode/", "v1/spec_decode/", "v1/sample/rejection"))
                        for i in spec[0].classes)


@requires_vllm_stack
def test_with_mtp_the_spec_decode_kernels_may_run():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3.5-9B.json", *MTP2, families=("vllm-runtime",))
    resolved = ServingArgs.from_dict(plan.serving).vllm["resolved"]
    assert resolved["speculative_method"] == "mtp" and resolved["num_speculative_tokens"] == 2
    fam = family(plan)
    may, _ = verdict_ids(fam)
    assert not [k for k in fam.kernels if "speculative decoding only" in k.covers]
    assert any(i.startswith("v1/worker/gpu/spec_decode/") for i in may)


@requires_vllm_stack
def test_a_dense_model_states_mamba_kernels_cannot_run():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3-8B-FP8.json", families=("all",))
    fam = family(plan)
    _, cannot = verdict_ids(fam)
    assert "v1/worker/mamba_utils.py:postprocess_mamba_fused_kernel" in cannot
    assert any("is_hybrid=False" in k.covers for k in fam.kernels)


def test_v1_runner_rules_out_the_v2_tree_and_unknown_files_are_unclassified():
    v2 = TritonKernel("v1/worker/gpu/sample/min_p.py", "_min_p_kernel", 1)
    assert vllm_runtime.verdict(v2, {"use_v2_model_runner": False})[0] is False
    assert vllm_runtime.verdict(v2, {"use_v2_model_runner": True, "enable_jit_warmup": True}) == (
        True, vllm_runtime.V2_SAMPLER_WARMUP)
    rocm = TritonKernel("v1/attention/ops/rocm_aiter_mla_sparse.py", "k", 1)
    assert vllm_runtime.verdict(rocm, {"use_v2_model_runner": True})[0] is False
    assert "unclassified" in vllm_runtime.verdict(TritonKernel("v1/new_area/x.py", "k", 1), {})[1]


def test_without_vllms_resolution_the_family_says_so():
    serving = ServingArgs(engine="vllm", families=("vllm-runtime",), vllm={})
    fam, items = vllm_runtime.plan_family(None, None, serving, None)
    assert fam.status == "not-covered" and items == [] and "vLLM 0.33" in fam.summary
