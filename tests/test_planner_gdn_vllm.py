"""vLLM 0.33 GDN planner: counts per kernel from the engine's rules, dispatch by arch, the real vLLM
kernels probed and audited under virtual targets, and the engine adapter's version refusal."""

import json
import subprocess
import sys

import pytest

from aotwarm.engines import EngineInfo
from aotwarm.errors import BadInput
from aotwarm.model import load_model
from aotwarm.plan import ServingArgs
from aotwarm.planners import make_plan
from aotwarm.planners.gdn_vllm import (capture_sizes, decode_batches, int_class, norm_rows, rows_per_block)
from aotwarm.targets import PROFILES, resolve_target
from tests.conftest import QWEN35_9B, QWEN35_35B

FAKE_VLLM = EngineInfo("vllm", "vllm", "0.33.0", "0" * 64, "/nowhere")


def plan_for(path, tp=1, gpu="sm90", **serving):
    spec, src = load_model(str(path))
    return make_plan(spec, src, resolve_target(gpu), ServingArgs(engine="vllm", tp=tp, **serving), FAKE_VLLM)


def ids(plan, prefix):
    return sorted(i.id for i in plan.items if i.id.startswith(prefix))


# -- counts per kernel, from the engine's rules ----------------------------------------------------

@pytest.mark.parametrize("path,tp,hv", [(QWEN35_9B, 1, 32), (QWEN35_9B, 2, 16),
                                        (QWEN35_35B, 1, 32), (QWEN35_35B, 2, 16), (QWEN35_35B, 4, 8)])
def test_counts_per_kernel_follow_vllm_033(path, tp, hv):
    """sm90 defaults (8192 batched tokens, 256 seqs, CUDA graphs, FlashInfer prefill).

    * conv prefill: 1 item (strides/dim constexpr; the token count only sizes the grid).
    * post-conv: L is a specialized int -> classes 1, 16, other (3), each also behind a decode
      token in a mixed batch, where a/b/conv rows are slices (3 more) -> 6.
    * chunk pipeline: 0 on sm90 (vLLM runs FlashInfer's JIT prefill there; reported as uncovered).
    * gated RMSNorm: M = tokens*HV; classes of M x ROWS_PER_BLOCK=min(next_pow2(cdiv(M, 264)), 4)
      over tokens 1..8192.  HV % 16 == 0 -> M is always %16 -> 3 keys (rows 1, 2, 4); HV = 8 ->
      M is %16 for even token counts, "other" for odd -> 6 keys.
    * conv update: decode batches (capture sizes 1, 2, 4, 8..248, 256..512 capped by 2*256 seqs,
      so all batches 1..256 are captured) -> classes 1, other, 16 -> 3.
    * packed decode: no specialized int; batch 1 keeps the projection row stride for b/a
      (``.contiguous()`` is a no-op on one row), a constexpr -> 2 (batch 1, batch > 1); B*HV <= 65535.
    * sigmoid gating: N/T do_not_specialize -> 1 (decode part of mixed batches).
    """
    plan = plan_for(path, tp)
    assert ids(plan, "gdn/conv-prefill") == ["gdn/conv-prefill"]
    assert len(ids(plan, "gdn/post-conv/")) == 6
    assert ids(plan, "gdn/chunk-prefill") == []
    expected_norm = 3 if hv % 16 == 0 else 6
    assert len(ids(plan, "gdn/gated-rmsnorm/")) == expected_norm
    assert ids(plan, "gdn/conv-update/") == ["gdn/conv-update/batch-1", "gdn/conv-update/batch-16",
                                             "gdn/conv-update/batch-other"]
    assert ids(plan, "gdn/packed-decode/") == ["gdn/packed-decode/BV32-batch1", "gdn/packed-decode/BV32-batch>1"]
    assert ids(plan, "gdn/sigmoid-gating/") == ["gdn/sigmoid-gating/mixed"]
    assert len(plan.items) == 1 + 6 + expected_norm + 3 + 2 + 1
    gdn = plan.families[0]
    assert any("FlashInfer" in u and "--gdn-prefill-backend triton" in u for u in gdn.uncovered)
    params = plan.items[0].params
    assert (params["num_v_heads"], params["num_k_heads"]) == (hv, 16 // tp)
    assert params["ssm_state_dtype"] == "float32"  # the config's mamba_ssm_dtype, which vLLM applies


def test_norm_rows_are_vllms_enumeration():
    # ROWS_PER_BLOCK thresholds at 132 SMs: M <= 264 -> 1, <= 528 -> 2, else 4
    assert rows_per_block(264, 132) == 1 and rows_per_block(265, 132) == 2 and rows_per_block(529, 132) == 4
    assert norm_rows(8192, 32, 132) == {("16", 1): 1, ("16", 2): 9, ("16", 4): 17}
    assert norm_rows(8192, 8, 132) == {("other", 1): 1, ("16", 1): 2, ("other", 2): 35, ("16", 2): 34,
                                       ("other", 4): 67, ("16", 4): 68}
    # a reduced SM count moves the thresholds: --num-sms changes the plan
    assert norm_rows(8192, 32, 66) == {("16", 1): 1, ("16", 2): 5, ("16", 4): 9}


def test_sm_count_changes_the_plan():
    full = plan_for(QWEN35_9B, gpu="sm90")
    spec, src = load_model(str(QWEN35_9B))
    reduced = make_plan(spec, src, resolve_target("sm90", 66), ServingArgs(engine="vllm"), FAKE_VLLM)
    tok = lambda p: sorted(i.params["tokens"] for i in p.items if i.op == "vllm.gdn_gated_rmsnorm")
    assert tok(full) == [1, 9, 17] and tok(reduced) == [1, 5, 9]


def test_decode_batches_follow_capture_sizes_then_eager():
    h100 = PROFILES["h100-sxm"]
    sizes = capture_sizes(ServingArgs(), h100)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 512 and 264 not in sizes
    # 256 seqs: the largest graph (512 tokens) covers every batch
    assert decode_batches(ServingArgs(), h100)[-1] == 256
    # eager: every batch size; graphs capped at 8: 1, 2, 4, 8 then eager 9..64
    assert decode_batches(ServingArgs(enforce_eager=True, max_num_seqs=64), h100) == list(range(1, 65))
    small = decode_batches(ServingArgs(max_cudagraph_capture_size=8, max_num_seqs=64), h100)
    assert small[:4] == [1, 2, 4, 8] and small[4:] == list(range(9, 65))
    # speculative: capture sizes are tokens; sequences = tokens / (k + 1)
    assert decode_batches(ServingArgs(num_speculative_tokens=3), h100, query_len=4)[:3] == [1, 2, 4]
    assert {int_class(b) for b in decode_batches(ServingArgs(max_num_seqs=8), h100)} == {"1", "other"}


def test_max_num_seqs_below_16_has_no_16_class():
    plan = plan_for(QWEN35_9B, max_num_seqs=8)
    assert ids(plan, "gdn/conv-update/") == ["gdn/conv-update/batch-1", "gdn/conv-update/batch-other"]


@pytest.mark.parametrize("gpu,backend_args,chunk", [
    ("sm90", [], False), ("sm90", ["triton"], True), ("sm80", [], True), ("sm89", [], True),
    ("sm100", [], False), ("sm80", ["flashinfer"], True)])
def test_prefill_backend_dispatch_by_arch(gpu, backend_args, chunk):
    serving = {"gdn_prefill_backend": backend_args[0]} if backend_args else {}
    plan = plan_for(QWEN35_9B, gpu=gpu, **serving)
    assert bool(ids(plan, "gdn/chunk-prefill")) == chunk
    uncovered = " ".join(plan.families[0].uncovered)
    assert ("GDN chunked prefill" in uncovered) == (not chunk)
    assert ("triton" if chunk else "flashinfer") in plan.families[0].summary


def test_sm100_needs_cuda13_for_flashinfer():
    assert not ids(plan_for(QWEN35_9B, gpu="sm100"), "gdn/chunk-prefill")
    assert ids(plan_for(QWEN35_9B, gpu="sm100", cuda_runtime_major=12), "gdn/chunk-prefill")


def test_sm100_packed_decode_bv_variants():
    # K = V = 128 on the sm100 family: BV = 4 when B*HV <= 64, else 8 for an fp32 state
    plan = plan_for(QWEN35_9B, gpu="sm100")
    assert ids(plan, "gdn/packed-decode/") == ["gdn/packed-decode/BV4-batch1", "gdn/packed-decode/BV4-batch>1",
                                               "gdn/packed-decode/BV8-batch>1"]


def test_speculative_tokens_add_the_spec_variants():
    plan = plan_for(QWEN35_9B, num_speculative_tokens=2)
    assert ids(plan, "gdn/conv-update/spec-") == ["gdn/conv-update/spec-batch-1", "gdn/conv-update/spec-batch-16",
                                                  "gdn/conv-update/spec-batch-other"]
    assert ids(plan, "gdn/sigmoid-gating/") == ["gdn/sigmoid-gating/mixed", "gdn/sigmoid-gating/spec"]
    assert "gdn/conv-prefill/spec-batch" in ids(plan, "gdn/conv-prefill")
    assert all(i.params["num_spec"] == 2 for i in plan.items)  # the conv state is longer: strides change
    assert any("fused_gdn_decode_post_conv_mtp" in u for u in plan.families[0].uncovered)


def test_coverage_lists_range_and_classes_per_kernel():
    plan = plan_for(QWEN35_9B, gdn_prefill_backend="triton")
    cov = {k.kernel: k for k in plan.families[0].kernels}
    assert {"_causal_conv1d_fwd_kernel", "_fused_post_conv_kernel", "layer_norm_fwd_kernel",
            "_causal_conv1d_update_kernel", "fused_recurrent_gated_delta_rule_packed_decode_kernel",
            "fused_sigmoid_gating_delta_rule_update_kernel", "chunk_fwd_kernel_o",
            "chunk_scaled_dot_kkt_fwd_kernel", "merge_16x16_to_64x64_inverse_kernel"} <= set(cov)
    assert cov["_fused_post_conv_kernel"].covers == "prefill tokens 1..8192"
    assert any("class 16 at L=16" in c for c in cov["_fused_post_conv_kernel"].classes)
    assert cov["_causal_conv1d_update_kernel"].covers.startswith("decode batch 1..256")


# -- the engine adapter ------------------------------------------------------------------------------

def test_unsupported_vllm_version_is_refused_with_the_override(monkeypatch):
    import importlib.metadata

    from aotwarm.engines import vllm as vllm_engine

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.34.1" if d == "vllm" else real(d))
    monkeypatch.delenv("AOTWARM_ALLOW_ENGINE_VERSION", raising=False)
    with pytest.raises(BadInput, match=r"vLLM 0.34.1 is installed but aotwarm plans vLLM 0.33.x.*AOTWARM_ALLOW_ENGINE_VERSION=0.34.1"):
        vllm_engine.detect()
    monkeypatch.setenv("AOTWARM_ALLOW_ENGINE_VERSION", "0.34.1")
    if importlib.util.find_spec("vllm") is not None:
        assert vllm_engine.detect().version == "0.34.1"


# -- the real vLLM kernels under the virtual device ----------------------------------------------------

vllm = pytest.importorskip("vllm", reason="vLLM 0.33 is installed by `make test` (pip install --no-deps vllm==0.33.0)")


def real_plan(path, tp=1, gpu="sm90", **serving):
    from aotwarm.engines import detect_engine

    spec, src = load_model(str(path))
    return make_plan(spec, src, resolve_target(gpu), ServingArgs(engine="vllm", tp=tp, **serving), detect_engine("vllm"))


def test_detect_installed_vllm():
    from aotwarm.engines import detect_engine

    info = detect_engine("auto")
    assert info.name == "vllm" and info.version.startswith("0.33.") and len(info.source_sha256) == 64


def test_vllms_own_warmup_keys_match_the_norm_plan():
    """vLLM enumerates the RMSNormGated keys itself (LayerNormFwdKernel.get_warmup_keys); our plan
    must reach exactly the same (M class, ROWS_PER_BLOCK) pairs at the target's SM count."""
    script = """
import json
from aotwarm.device import VirtualDevice
from aotwarm.targets import PROFILES
VirtualDevice(PROFILES["h100-sxm"]).install()
from aotwarm.engines.vllm_platform import ensure_cuda_platform
ensure_cuda_platform(force=True)
import torch
from vllm.third_party.flash_linear_attention.ops.layernorm_guard import LayerNormFwdKernel
out = []
for hv in (32, 8):
    keys = LayerNormFwdKernel().get_warmup_keys(max_num_tokens=8192, rows_per_token=hv, group_size=128,
        x_dtype=torch.bfloat16, weight_dtype=torch.bfloat16, device=torch.device("cuda", 0),
        norm_before_gate=True, is_rms_norm=True, activation="silu")
    out.append(sorted([str(k.M), k.ROWS_PER_BLOCK] for k in keys))
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for hv, keys in zip((32, 8), theirs):
        ours = sorted(norm_rows(8192, hv, 132))
        assert len(keys) == len(ours), (hv, keys, ours)
        assert sorted(r for _, r in keys) == sorted(r for _, r in ours)


@pytest.mark.slow
@pytest.mark.parametrize("gpu,extra", [("sm90", {"gdn_prefill_backend": "triton", "max_num_seqs": 64}),
                                       ("sm89", {"tp": 4, "max_num_seqs": 64, "num_speculative_tokens": 2})])
def test_probe_and_audit_find_no_hole(gpu, extra):
    from aotwarm.probe import audit_plan, probe_plan

    tp = extra.pop("tp", 1)
    plan = probe_plan(real_plan(QWEN35_35B, tp=tp, gpu=gpu, max_num_batched_tokens=4096, **extra), jobs=2)
    chunk = [i for i in plan.items if i.id == "gdn/chunk-prefill"]
    assert chunk, "Triton prefill backend planned"
    # 6 chunk kernels, one autotune key each; 4+27+12+9+12+24 = 88 configs on sm90 (NUM_WARPS 2 on Hopper),
    # 100 elsewhere (chunk_o has 3 warp choices), plus the post-conv kernel the op runs first
    assert plan.probe["autotune_keys"] == 6
    assert chunk[0].jit_keys == (88 if gpu == "sm90" else 100) + 1
    assert all(i.jit_keys >= 1 for i in plan.items)
    report = audit_plan(plan, 60, jobs=2)
    assert report.failures == [] and report.outside == [], report


@pytest.mark.slow
def test_audit_catches_a_plan_that_claims_more_than_it_enumerated():
    """Plan decode for one sequence, then claim 64: the audit must find the batch classes left out."""
    from aotwarm.probe import audit_plan, probe_plan

    plan = probe_plan(real_plan(QWEN35_9B, max_num_seqs=1, max_num_batched_tokens=2048), jobs=2)
    assert [i.id for i in plan.items if "conv-update" in i.id] == ["gdn/conv-update/batch-1"]
    plan.serving["max_num_seqs"] = 64
    report = audit_plan(plan, 40, jobs=2)
    outside = " ".join(report.outside)
    assert "_causal_conv1d_update_kernel" in outside
    assert "fused_recurrent_gated_delta_rule_packed_decode_kernel" in outside
