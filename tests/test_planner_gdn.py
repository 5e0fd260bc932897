"""GDN planner for fla-core 0.6: work items for the fixture configs, coverage, probe and audit."""

import json
import os
import subprocess
import sys

import pytest

from aotwarm.engines import EngineInfo
from aotwarm.model import load_model
from aotwarm.plan import Plan, ServingArgs
from aotwarm.planners import make_plan
from aotwarm.planners.gdn import NB_ROWS, nb_buckets, smallest_count_in_bucket
from aotwarm.targets import resolve_target
from tests.conftest import QWEN35_9B, QWEN35_35B

FAKE_FLA = EngineInfo("fla", "fla-core", "0.6.0", "0" * 64, "/nowhere")


def plan_for(path, tp=1, gpu="sm90", **serving):
    spec, src = load_model(str(path))
    return make_plan(spec, src, resolve_target(gpu), ServingArgs(engine="fla", tp=tp, **serving), FAKE_FLA)


def expected_items(hv: int, max_tokens: int, max_seqs: int, prefill_batch: int) -> int:
    """Work items the planner must produce, derived from the specialization drivers it documents."""
    batch = sum(len(nb_buckets(b * (max_tokens // b) * hv)) + 3 for b in range(1, prefill_batch + 1))
    packed = len(nb_buckets(max_tokens * hv)) + 3  # one per l2norm NB bucket + 3 other state variants
    decode = 1  # N and T are do_not_specialize: every batch size shares one kernel
    norm = len(nb_buckets(max(max_tokens, max_seqs) * hv))
    return batch + packed + decode + norm


@pytest.mark.parametrize("path,tp,hv", [(QWEN35_9B, 1, 32), (QWEN35_9B, 2, 16), (QWEN35_35B, 1, 32),
                                         (QWEN35_35B, 2, 16), (QWEN35_35B, 4, 8)])
def test_item_counts_follow_the_engine_rules(path, tp, hv):
    plan = plan_for(path, tp=tp)
    fam = plan.families[0]
    assert fam.status == "planned" and f"HV={hv}" in fam.summary
    # 8192 tokens x HV rows in 65536-row buckets: tp1 -> 4 NB buckets, tp2 -> 2, tp4 -> 1
    assert len(nb_buckets(8192 * hv)) == {32: 4, 16: 2, 8: 1}[hv]
    assert len(plan.items) == expected_items(hv, 8192, 256, 1)
    for item in plan.items:
        assert item.params.get("num_v_heads", hv) == hv
        if item.op == "fla.gdn_chunk_prefill" and item.id.split("/")[-1].startswith("nb"):
            nb = int(item.id.split("nb")[-1])
            rows = item.params["tokens"] * hv * item.params.get("batch", 1)
            assert -(-rows // NB_ROWS) == nb  # the representative really is in its bucket
    assert any("causal conv1d" in u for u in fam.uncovered)


def test_prefill_batch_and_token_limit_change_the_plan():
    base = plan_for(QWEN35_9B)
    more = plan_for(QWEN35_9B, max_prefill_batch=3, max_num_batched_tokens=16384)
    assert len(more.items) == expected_items(32, 16384, 256, 3) > len(base.items)
    assert {i.params["batch"] for i in more.items if i.params.get("form") == "batch"} == {1, 2, 3}


def test_smallest_count_in_bucket():
    assert smallest_count_in_bucket(1, 32) == 1
    assert smallest_count_in_bucket(2, 32) == 2049  # 2048 tokens x 32 heads fill NB=1 exactly
    assert -(-(2048 * 32) // NB_ROWS) == 1 and -(-(2049 * 32) // NB_ROWS) == 2


def test_non_gdn_model_is_not_applicable():
    spec, src = load_model("aotwarm/configs/Qwen--Qwen3-8B-FP8.json")
    plan = make_plan(spec, src, resolve_target("sm90"), ServingArgs(engine="fla"), FAKE_FLA)
    assert plan.items == [] and plan.families[0].status == "not-applicable"


def test_plan_json_round_trip_and_hash_is_stable_across_hash_seeds(tmp_path):
    plan = plan_for(QWEN35_9B)
    path = tmp_path / "plan.json"
    plan.write(path)
    again = Plan.read(path)
    assert again.hash == plan.hash and again.to_json() == plan.to_json()
    code = ("import sys; sys.path.insert(0, '.');"
            "from tests.test_planner_gdn import plan_for; from tests.conftest import QWEN35_9B;"
            "print(plan_for(QWEN35_9B).hash)")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3")}
    assert hashes == {plan.hash}
    edited = json.loads(path.read_text())
    edited["serving"]["tp"] = 2
    path.write_text(json.dumps(edited))
    from aotwarm.errors import BadInput

    with pytest.raises(BadInput, match="edited after it was written"):
        Plan.read(path)


# -- the real engine under the virtual device -------------------------------------------------

fla = pytest.importorskip("fla")


def real_plan(path, tp=1, gpu="sm90", **serving):
    from aotwarm.engines import detect_engine

    spec, src = load_model(str(path))
    return make_plan(spec, src, resolve_target(gpu), ServingArgs(engine="fla", tp=tp, **serving), detect_engine("fla"))


def test_probe_reaches_the_documented_kernels_and_audit_finds_no_hole():
    from aotwarm.probe import audit_plan, probe_plan

    plan = probe_plan(real_plan(QWEN35_9B), jobs=2)
    by_id = {i.id: i for i in plan.items}
    nb1 = by_id["gdn/prefill/batch1/nb1"].kernels
    # the autotune config counts fla 0.6 declares on Hopper (NUM_WARPS=[2,4] since IS_NVIDIA_HOPPER)
    assert {k: [e["configs"] for e in v] for k, v in nb1.items()} == {
        "chunk_fwd_kernel_o": [3], "chunk_gated_delta_rule_fwd_kernel_h_blockdim64": [12],
        "chunk_gated_delta_rule_fwd_kkt_solve_kernel": [6], "chunk_local_cumsum_scalar_kernel": [4],
        "l2norm_fwd_kernel": [25], "recompute_w_u_fwd_kernel": [9]}
    assert nb1["l2norm_fwd_kernel"][0]["key"][:2] == [128, 1]  # key D=128, NB=1
    assert by_id["gdn/prefill/batch1/nb4"].kernels["l2norm_fwd_kernel"][0]["key"][:2] == [128, 4]
    assert list(by_id["gdn/decode"].kernels) == ["fused_recurrent_gated_delta_rule_fwd_kernel"]
    assert list(by_id["gdn/gated-rmsnorm/nb2"].kernels) == ["layer_norm_gated_fwd_kernel"]
    assert len(plan.probe["jit_keys"]) == 277 and plan.probe["autotune_keys"] == 22
    report = audit_plan(plan, samples=40, seed=7, jobs=2)
    assert report.failures == [] and report.outside == []


def test_audit_catches_a_planner_hole():
    """Drop the NB=4 items: the audit must find random shapes that reach keys outside the plan."""
    from aotwarm.probe import audit_plan, probe_plan

    plan = real_plan(QWEN35_9B)
    plan.items = [i for i in plan.items if not i.id.endswith("nb4")]
    probe_plan(plan, jobs=2)
    report = audit_plan(plan, samples=60, seed=3, jobs=2)
    assert any(line.startswith("l2norm_fwd_kernel") or line.startswith("layer_norm_gated") for line in report.outside)


def _triton_at_least_3_8() -> bool:
    import triton

    return tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 8)


@pytest.mark.parametrize("gpu,chunk_h,chunk_o,keys", [
    ("sm90", 12, 3, 175),   # Hopper: warps [2,4] x stages [2,3,4] x BV [32,64]
    ("sm89", 8, 3, 143),    # L40S: 99 KiB smem < Ampere's, so stages [2,1]
    # Blackwell: chunk_h warps [2] only; chunk_o keeps its 8-warp config only with Triton >= 3.8 (fla 0.6
    # drops it below: BLACKWELL_8_WARP_RACE, triton-lang/triton#10590), one more key per chunk_o key
    ("sm100", 6, 3, 127) if _triton_at_least_3_8() else ("sm100", 6, 2, 125),
])
def test_dispatch_differs_by_arch(gpu, chunk_h, chunk_o, keys):
    """fla picks config lists from the device at import: the virtual device must make it pick the target's."""
    from aotwarm.probe import probe_plan

    plan = probe_plan(real_plan(QWEN35_9B, gpu=gpu, max_num_batched_tokens=1024), jobs=2)
    nb1 = {i.id: i for i in plan.items}["gdn/prefill/batch1/nb1"].kernels
    assert nb1["chunk_gated_delta_rule_fwd_kernel_h_blockdim64"][0]["configs"] == chunk_h
    assert nb1["chunk_fwd_kernel_o"][0]["configs"] == chunk_o
    assert len(plan.probe["jit_keys"]) == keys
