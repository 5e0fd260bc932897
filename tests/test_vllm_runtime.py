"""vllm-runtime: every Triton kernel of vLLM's ``v1`` tree has a verdict in the plan -- may run (listed, with the
request feature that triggers it) or cannot run (with the condition vLLM decided) -- and none is unclassified.

The inventory is checked against a count made another way (decorator lines in the source text, not the AST walk),
and the verdicts against vLLM's own decisions recorded by the resolution (runner V2, speculative config, hybrid)."""

import json
import re

import pytest

from aotwarm.engines.vllm_runner import REQUEST_FEATURES
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
    assert fam.status in ("planned", "not-covered") and "may run for this config" in fam.summary


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


@requires_vllm_stack
def test_qwen35_items_start_vllms_runner_and_serve_workloads_with_the_requested_features():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3.5-9B.json", families=("vllm-runtime",))
    items = {i.id.split(":", 1)[1]: i for i in plan.items}
    assert set(items) == {"start-up", "ramp-0", "ramp-1", "matrix", "full-batch"}
    matrix = items["matrix"].params["workload"]  # one pattern per batch: groups three steps apart
    assert {r["arrive"] % 3 for r in matrix} == {0} and {r["max_tokens"] for r in matrix} == {2}
    assert all(i.op == vllm_runtime.OP and json.loads(i.params["config_json"]) for i in items.values())
    assert items["start-up"].params["workload"] == []
    used = {f for i in items.values() for r in i.params["workload"] for f in r["features"]}
    assert used == set(REQUEST_FEATURES)
    ramp = items["ramp-0"].params["workload"]
    assert [r["arrive"] for r in ramp] == list(range(vllm_runtime.RAMP_REQUESTS))
    resolved = ServingArgs.from_dict(plan.serving).vllm["resolved"]
    assert len(items["full-batch"].params["workload"]) == resolved["max_num_seqs"] >= 256  # vLLM decides it
    assert family(plan).status == "planned"


@requires_vllm_stack
def test_request_features_narrow_the_workloads_and_the_rest_is_said():
    from aotwarm import serving as serving_mod
    from aotwarm.errors import BadInput
    from aotwarm.model import load_model
    from aotwarm.planners import make_plan
    from aotwarm.engines import detect_engine
    from aotwarm.targets import resolve_target
    from tests.vllm_plans import decisions

    path = CONFIGS / "Qwen--Qwen3.5-9B.json"
    d = decisions(str(path), "h200", ())
    serving = serving_mod.for_vllm(d, ("vllm-runtime",), {"request_features": "logprobs,min_p"})
    assert serving.request_features == ("min_p", "logprobs")
    spec, src = load_model(str(path))
    plan = make_plan(spec, src, resolve_target("h200"), serving, detect_engine("vllm"))
    used = {f for i in plan.items for r in i.params["workload"] for f in r["features"]}
    assert used == {"min_p", "logprobs"}
    text = "\n".join(family(plan).uncovered)
    assert "requests with penalties (not in --request-features) compile on first use: " \
           "v1/worker/gpu/sample/penalties.py" in text
    assert serving_mod.request_features({"request_features": "none"}) == ()
    with pytest.raises(BadInput, match="unknown request feature.*beam"):
        serving_mod.request_features({"request_features": "logprobs,beam"})


@requires_vllm_stack
def test_with_mtp_the_runner_is_started_with_vllms_drafter():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3.5-9B.json", *MTP2, families=("vllm-runtime",))
    fam = family(plan)
    assert {i.id.split(":", 1)[1] for i in plan.items} == {"start-up", "ramp-0", "ramp-1", "matrix", "full-batch"}
    assert "not planned" not in fam.summary and all("--speculative-config" in i.params["vllm_args"]
                                                    for i in plan.items)


def test_drafters_the_harness_cannot_create_are_stated():
    base = {"use_v2_model_runner": True, "runner_type": "generate"}
    assert vllm_runtime._runner_blocker({**base, "speculative_method": "mtp"}) is None
    for method in ("ngram", "eagle3", "draft_model"):
        why = vllm_runtime._runner_blocker({**base, "speculative_method": method})
        assert why.startswith(f"speculative decoding ({method})") and "only these drafters: mtp" in why


def test_without_vllms_resolution_the_family_says_so():
    serving = ServingArgs(engine="vllm", families=("vllm-runtime",), vllm={})
    fam, items = vllm_runtime.plan_family(None, None, serving, None)
    assert fam.status == "not-covered" and items == [] and "vLLM 0.33" in fam.summary
