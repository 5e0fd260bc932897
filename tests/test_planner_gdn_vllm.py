"""vLLM 0.33 GDN planner: the serving config and state layout come from vLLM itself; counts per kernel
follow from them; the real vLLM kernels probed and audited under virtual targets; version refusal."""

import json
import subprocess
import sys

import pytest

from aotwarm.errors import BadInput
from aotwarm.plan import ServingArgs
from aotwarm.planners.gdn_vllm import decode_batches, int_class, norm_rows, rows_per_block
from tests.conftest import QWEN35_9B, QWEN35_35B, requires_vllm_stack, run_cli
from tests.vllm_plans import decisions, vllm_plan

vllm = pytest.importorskip("vllm", reason="vLLM 0.33 is installed by `make setup`")


def ids(plan, prefix):
    return sorted(i.id for i in plan.items if i.id.startswith(prefix))


# -- pure enumeration rules ---------------------------------------------------------------------------

def test_norm_rows_are_vllms_enumeration():
    # ROWS_PER_BLOCK thresholds at 132 SMs: M <= 264 -> 1, <= 528 -> 2, else 4
    assert rows_per_block(264, 132) == 1 and rows_per_block(265, 132) == 2 and rows_per_block(529, 132) == 4
    assert norm_rows(8192, 32, 132) == {("16", 1): 1, ("16", 2): 9, ("16", 4): 17}
    assert norm_rows(8192, 8, 132) == {("other", 1): 1, ("16", 1): 2, ("other", 2): 35, ("16", 2): 34,
                                       ("other", 4): 67, ("16", 4): 68}
    # a reduced SM count moves the thresholds: --num-sms changes the plan
    assert norm_rows(8192, 32, 66) == {("16", 1): 1, ("16", 2): 5, ("16", 4): 9}


def _serving(mode="FULL_AND_PIECEWISE", sizes=(1, 2, 4, 8), **kw):
    resolved = {"cudagraph_mode": mode, "cudagraph_capture_sizes": list(sizes)}
    return ServingArgs(engine="vllm", vllm={"resolved": resolved}, **kw)


def test_decode_batches_follow_vllms_capture_sizes_then_eager():
    # full decode graphs at vLLM's capture sizes, eager above the largest
    assert decode_batches(_serving(max_num_seqs=12)) == [1, 2, 4, 8, 9, 10, 11, 12]
    # no full decode graph (piecewise only, or --enforce-eager): every batch at its real size
    assert decode_batches(_serving("PIECEWISE", max_num_seqs=6)) == list(range(1, 7))
    assert decode_batches(_serving(max_num_seqs=6, enforce_eager=True)) == list(range(1, 7))
    # speculative: capture sizes are tokens; sequences = tokens / (k + 1); one-token steps are eager
    spec = _serving(sizes=(3, 6, 12), num_speculative_tokens=2, max_num_seqs=5)
    assert decode_batches(spec, query_len=3) == [1, 2, 4, 5]
    assert decode_batches(spec) == [1, 2, 3, 4, 5]
    assert {int_class(b) for b in decode_batches(_serving(max_num_seqs=8))} == {"1", "other"}


# -- what vLLM decided, and the plan that follows -----------------------------------------------------------

@pytest.mark.slow
@requires_vllm_stack
@pytest.mark.parametrize("path,argv,hv", [(QWEN35_9B, (), 32), (QWEN35_35B, ("--tensor-parallel-size", "2"), 16),
                                          (QWEN35_35B, ("--tensor-parallel-size", "4"), 8)])
def test_h200_defaults_follow_vllms_decisions(path, argv, hv):
    """``vllm serve`` defaults on an H200, as vLLM resolves them: 8192 batched tokens, 1024 sequences,
    full decode CUDA graphs up to 512, prefix caching on -> mamba cache mode "align", FlashInfer GDN
    prefill, RMSNormGated as torch code under torch.compile (custom_ops "none").

    * conv prefill 1 (strides/dim constexpr); post-conv 6 (L classes 1/16/other, alone and behind a
      decode token); chunk pipeline 0 (FlashInfer, stated); RMSNormGated 0 (stated).
    * checkpoint export 2: the recurrent-rows pointer is 16-byte aligned or not with the parity of the
      number of prefill sequences.
    * conv update: batches 1..512 padded to capture sizes, 513..1024 eager -> classes 1, 16, other.
    * packed decode: batch 1 keeps the projection's row stride for b/a -> 2; sigmoid gating 1.
    """
    plan = vllm_plan(path, *argv)
    r = plan.serving["vllm"]["resolved"]
    assert (r["max_num_batched_tokens"], r["max_num_seqs"], r["max_cudagraph_capture_size"]) == (8192, 1024, 512)
    assert r["mamba_cache_mode"] == "align" and r["enable_prefix_caching"]
    assert ids(plan, "gdn/conv-prefill") == ["gdn/conv-prefill"]
    assert len(ids(plan, "gdn/post-conv/")) == 6
    assert ids(plan, "gdn/chunk-prefill") == [] and ids(plan, "gdn/gated-rmsnorm") == []
    assert ids(plan, "gdn/checkpoint-export/") == ["gdn/checkpoint-export/even-prefills",
                                                   "gdn/checkpoint-export/odd-prefills"]
    assert ids(plan, "gdn/conv-update/") == ["gdn/conv-update/batch-1", "gdn/conv-update/batch-16",
                                             "gdn/conv-update/batch-other"]
    assert ids(plan, "gdn/packed-decode/") == ["gdn/packed-decode/BV32-batch1", "gdn/packed-decode/BV32-batch>1"]
    assert ids(plan, "gdn/sigmoid-gating/") == ["gdn/sigmoid-gating/mixed"]
    assert len(plan.items) == 1 + 6 + 2 + 3 + 2 + 1
    uncovered = " ".join(plan.families[0].uncovered)
    assert "FlashInfer" in uncovered and "--gdn-prefill-backend triton" in uncovered
    assert "RMSNormGated" in uncovered and "torch.compile" in uncovered
    params = plan.items[0].params
    assert (params["num_v_heads"], params["num_k_heads"]) == (hv, 16 * hv // 32)
    assert params["ssm_state_dtype"] == "float32"  # the config's mamba_ssm_dtype, which vLLM applies


@pytest.mark.slow
@requires_vllm_stack
def test_state_strides_are_vllms_page_not_a_contiguous_pool():
    """The states are slices of vLLM's hybrid KV-cache pages: their block stride is the padded page,
    which depends on the attention block size, the KV dtype and prefix caching (all vLLM's decisions)."""
    default = decisions(str(QWEN35_9B), "h200", ())
    d = default["gdn"]
    ssm, conv = d["state"]["ssm"], d["state"]["conv"]
    page = default["resolved"]["mamba_page_size_padded"]
    assert d["page_bytes"] == page and ssm["stride"][0] * 4 == page  # float32 SSM state
    assert ssm["stride"][0] != 32 * 128 * 128  # not the contiguous (HV, V, K) block
    assert conv["stride"][0] * 2 == page and conv["stride"][1:] == [1, 8192]  # SD storage, handed over transposed
    assert ssm["byte_offset"] == 3 * 8192 * 2  # behind the conv state in the page
    no_pc = decisions(str(QWEN35_9B), "h200", ("--no-enable-prefix-caching",))["gdn"]
    fp8 = decisions(str(QWEN35_9B), "h200", ("--kv-cache-dtype", "fp8"))["gdn"]
    assert len({d["page_bytes"], no_pc["page_bytes"], fp8["page_bytes"]}) == 3
    plan = vllm_plan(QWEN35_9B, "--kv-cache-dtype", "fp8")
    assert all(i.params["state"] == fp8["state"] for i in plan.items)


TRITON_PREFILL = ("--gdn-prefill-backend", "triton", "--max-num-seqs", "64", "--max-num-batched-tokens", "4096")
EAGER = ("--enforce-eager", "--max-num-seqs", "64")


@pytest.mark.slow
@requires_vllm_stack
@pytest.mark.parametrize("gpu,argv,chunk", [("h200", TRITON_PREFILL, True), ("a100", (), True), ("h200", (), False)])
def test_prefill_backend_is_the_layers_choice(gpu, argv, chunk):
    plan = vllm_plan(QWEN35_9B, *argv, gpu=gpu)
    assert plan.serving["vllm"]["gdn"]["prefill_backend"] == ("triton" if chunk else "flashinfer")
    assert bool(ids(plan, "gdn/chunk-prefill")) == chunk
    assert ("GDN chunked prefill" in " ".join(plan.families[0].uncovered)) == (not chunk)
    # checkpoints are exported only after FlashInfer's prefill
    assert bool(ids(plan, "gdn/checkpoint-export")) == (not chunk)


@pytest.mark.slow
@requires_vllm_stack
def test_enforce_eager_plans_the_triton_rmsnorm_and_every_batch():
    plan = vllm_plan(QWEN35_9B, *EAGER)
    assert plan.serving["vllm"]["gdn"]["norm_custom_op"]
    assert len(ids(plan, "gdn/gated-rmsnorm/")) == 3  # HV = 32: M always %16; ROWS_PER_BLOCK 1, 2, 4
    assert plan.serving["vllm"]["resolved"]["cudagraph_mode"] == "NONE"
    conv = next(k for k in plan.families[0].kernels if k.kernel == "_causal_conv1d_update_kernel")
    assert conv.covers == "decode batch 1..64 (eager)"


@pytest.mark.slow
@requires_vllm_stack
def test_max_num_seqs_below_16_has_no_16_class():
    plan = vllm_plan(QWEN35_9B, "--max-num-seqs", "8")
    assert ids(plan, "gdn/conv-update/") == ["gdn/conv-update/batch-1", "gdn/conv-update/batch-other"]


@pytest.mark.slow
@requires_vllm_stack
def test_sm_count_changes_the_norm_plan():
    full = vllm_plan(QWEN35_9B, *EAGER)
    reduced = vllm_plan(QWEN35_9B, *EAGER, num_sms=66)
    tok = lambda p: sorted(i.params["tokens"] for i in p.items if i.op == "vllm.gdn_gated_rmsnorm")
    assert tok(full) == [1, 9, 17] and tok(reduced) == [1, 5, 9]


@pytest.mark.slow
@requires_vllm_stack
def test_settings_vllm_rejects_are_one_line_errors_with_vllms_reason(tmp_path):
    proc = run_cli("plan", str(QWEN35_9B), "--gpu", "h200", "--engine", "vllm", "--",
                   "--tensor-parallel-size", "3")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "vLLM rejects these serving settings" in lines[0]
    assert "divisible" in lines[0] or "divide" in lines[0], lines[0]
    proc = run_cli("plan", str(QWEN35_9B), "--gpu", "h200", "--engine", "vllm", "--", "--no-such-flag")
    assert proc.returncode == 2 and "unrecognized arguments: --no-such-flag" in proc.stderr, proc.stderr


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
    assert vllm_engine.detect().version == "0.34.1"


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


# -- the real vLLM kernels under the virtual device ----------------------------------------------------

@pytest.mark.slow
@requires_vllm_stack
@pytest.mark.parametrize("path,argv", [(QWEN35_9B, TRITON_PREFILL), (QWEN35_35B, ("--tensor-parallel-size", "4"))])
def test_probe_and_audit_find_no_hole(path, argv):
    from aotwarm.probe import audit_plan, probe_plan

    plan = probe_plan(vllm_plan(path, *argv), jobs=2)
    chunk = [i for i in plan.items if i.id == "gdn/chunk-prefill"]
    if "triton" in argv:
        # 6 chunk kernels, one autotune key each; 4+27+12+9+12+24 = 88 configs on sm90 (NUM_WARPS 2 on
        # Hopper), plus the post-conv kernel the op runs first
        assert plan.probe["autotune_keys"] == 6 and chunk[0].jit_keys == 88 + 1
    assert all(i.jit_keys >= 1 for i in plan.items)
    report = audit_plan(plan, 60, jobs=2)
    assert report.failures == [] and report.outside == [], report


@pytest.mark.slow
@requires_vllm_stack
def test_audit_catches_a_plan_that_claims_more_than_it_enumerated():
    """Keep only the one-sequence decode items of a plan for 8 sequences: the audit, drawing batches in the
    range the plan claims (1..8), must find the batch classes left out."""
    from aotwarm.probe import audit_plan, probe_plan

    plan = vllm_plan(QWEN35_9B, "--max-num-seqs", "8")
    plan.items = [i for i in plan.items if "conv-update" not in i.id or i.id == "gdn/conv-update/batch-1"]
    plan.items = [i for i in plan.items if "packed-decode" not in i.id or i.id.endswith("batch1")]
    probe_plan(plan, jobs=2)
    report = audit_plan(plan, 30, jobs=2)
    outside = " ".join(report.outside)
    assert "_causal_conv1d_update_kernel" in outside
    assert "fused_recurrent_gated_delta_rule_packed_decode_kernel" in outside
