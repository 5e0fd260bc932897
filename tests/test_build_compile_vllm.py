"""Real GPU-less compiles of vLLM 0.33's GDN kernels for two arches (slow: the Triton compiler runs), and the
sm80 plan key-only.

What runs is what vLLM decides for each target (``vllm serve`` defaults, resolved by vLLM on a virtual
node of that GPU): sm80 runs the Triton/FLA chunk prefill (100 configs: chunk_o has three warp choices
off Hopper); sm90 and sm100 send prefill to FlashInfer, and with prefix caching on ("align" mode) the
layer exports prefill checkpoints with ``store_cache_checkpoints_kernel``; sm100 adds the BV=4/8
packed-decode variants.  RMSNormGated runs as torch code under torch.compile by default: no Triton
kernel of vLLM's is planned for it (stated).
"""

import json

import pytest

from aotwarm.bundle import read_bundle
from tests.conftest import QWEN35_9B, requires_vllm_stack, run_cli

pytestmark = [pytest.mark.slow, requires_vllm_stack]

VLLM_ARGS = ["--", "--max-num-batched-tokens", "2048", "--max-num-seqs", "64"]
DECODE_AND_MISC = {"_causal_conv1d_fwd_kernel", "_fused_post_conv_kernel", "_causal_conv1d_update_kernel",
                   "fused_recurrent_gated_delta_rule_packed_decode_kernel",
                   "fused_sigmoid_gating_delta_rule_update_kernel"}
CHUNK = {"chunk_local_cumsum_scalar_kernel", "chunk_scaled_dot_kkt_fwd_kernel", "merge_16x16_to_64x64_inverse_kernel",
         "recompute_w_u_fwd_kernel", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "chunk_fwd_kernel_o"}
CHECKPOINT = {"store_cache_checkpoints_kernel"}


def test_vllm_gdn_on_a100_plans_the_chunk_prefill():
    """sm80: vLLM runs the Triton/FLA chunk prefill -- planned key-only here (100 chunk configs + the misc
    kernels; compiling them all costs CI 143 s, and the same chunk kernels compile in the fla compile tests)."""
    proc = run_cli("plan", str(QWEN35_9B), "--gpu", "a100", "--engine", "vllm", "--family", "gdn", "--json",
                   *VLLM_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(proc.stdout)
    keys = plan["probe"]["jit_keys"]
    assert {k.split("|")[0] for k in keys} == DECODE_AND_MISC | CHUNK and len(keys) > 100
    gdn = next(f for f in plan["families"] if f["family"] == "gdn")
    assert gdn["status"] == "planned" and not any("GDN chunked prefill" in u for u in gdn["uncovered"])


@pytest.mark.parametrize("gpu,arch,expected", [("h200", 90, DECODE_AND_MISC | CHECKPOINT),
                                               ("b200", 100, DECODE_AND_MISC | CHECKPOINT)])
def test_vllm_gdn_kernels_compile_gpu_less(tmp_path, gpu, arch, expected):
    out = tmp_path / f"{gpu}.tar.zst"
    proc = run_cli("build", str(QWEN35_9B), "--gpu", gpu, "--engine", "vllm", "--family", "gdn", "--no-launchers", "-j", "2",
                   "-o", str(out), "--json", *VLLM_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0
    assert summary["cache_entries"] == summary["planned_jit_keys"]
    manifest = read_bundle(out)
    names = {f["path"].rsplit("/", 1)[1].removesuffix(".cubin") for f in manifest["files"] if f["path"].endswith(".cubin")}
    assert names == expected
    assert manifest["engine"]["name"] == "vllm" and manifest["engine"]["version"].startswith("0.33.")
    assert manifest["target"]["capability"] == [arch // 10, arch % 10]
    gdn = next(c for c in manifest["coverage"] if c["family"] == "gdn")
    assert gdn["status"] == "planned"
    assert any("GDN chunked prefill" in u for u in gdn["uncovered"]) == (arch != 80)
    assert any("RMSNormGated" in u for u in gdn["uncovered"])
    # vLLM's own platform answered the kernels' device queries; what vLLM decided is in the manifest
    assert manifest["engine_runtime"]["vllm_platform"] == ["vllm"]
    resolved = manifest["plan"]["serving"]["vllm"]["resolved"]
    assert resolved["max_num_seqs"] == 64 and resolved["max_num_batched_tokens"] == 2048


def test_vllm_runtime_kernels_compile_gpu_less_from_vllms_own_runner(tmp_path):
    """vllm-runtime: vLLM's V2 runner with its MTP drafter (2 tokens) started GPU-less for sm90 and serving the
    plan's workloads through vLLM's scheduler; every key it reached compiles, and the statement keeps only what it
    did not reach."""
    from aotwarm.engines.vllm_triton_inventory import v1_kernels
    from aotwarm.planners import vllm_runtime

    out = tmp_path / "runtime.tar.zst"
    # a few request features keep CI short; vLLM's warm-up uses them all once (SamplingParams.for_sampler_warmup)
    proc = run_cli("build", str(QWEN35_9B), "--gpu", "sm90", "--engine", "vllm", "--family", "vllm-runtime",
                   "--request-features", "temperature,top_k,top_p,penalties,logprobs", "--no-launchers", "-j", "2",
                   "-o", str(out), "--json", *VLLM_ARGS, "--speculative-config",
                   json.dumps({"method": "mtp", "num_speculative_tokens": 2}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0 and summary["cache_entries"] == summary["planned_jit_keys"] >= 50
    manifest = read_bundle(out)
    plan = manifest["plan"]
    keys = plan["probe"]["jit_keys"]
    reached = {k.split("|", 1)[0] for k in keys}
    # the runner's input preparation, the sampler with every feature, the hybrid model's mamba state
    assert {"_prepare_pos_seq_lens_kernel", "_gather_block_tables_kernel", "_compute_slot_mappings_kernel",
            "_penalties_kernel", "_min_p_kernel", "_bias_kernel", "_bad_words_kernel", "_topk_log_softmax_kernel",
            "_apply_grammar_bitmask_kernel", "_topk_topp_kernel", "_topp_sb_stats_kernel",
            "precopy_mamba_align_fused_kernel", "_zero_kv_blocks_kernel"} <= reached
    # the drafter and the rejection sampler: draft inputs (prefill, decode steps), rejection and resampling
    assert {"_prepare_decode_inputs_kernel", "_update_draft_inputs_kernel", "_rejection_kernel", "_resample_kernel",
            "_get_num_sampled_and_rejected_kernel", "_gather_draft_sampled_kernel"} <= reached
    # vLLM's top-k/top-p module took its GPU branch (8192-wide tiles, 8 warps), not the CPU one (256, 4 warps)
    topk = [k for k in keys if k.startswith("_topk_topp_kernel|")]
    assert topk and all("('constexpr', 8192)" in k and "'num_warps': 8" in k for k in topk)
    # what the runner reached is what the static verdicts call "may run" (two methods agree)
    resolved = plan["serving"]["vllm"]["resolved"]
    by_name: dict[str, list] = {}
    for k in v1_kernels():
        by_name.setdefault(k.name, []).append(k)
    for name in reached:
        assert any(vllm_runtime.verdict(k, resolved)[0] for k in by_name[name]), name
    fam = next(c for c in manifest["coverage"] if c["family"] == "vllm-runtime")
    assert fam["status"] == "planned" and "reached (probed)" in fam["summary"]
    listed = "\n".join(fam["uncovered"])
    assert "_penalties_kernel" not in listed and "_topk_topp_kernel" not in listed
    assert "batch_shard.py" in listed  # not reached: batch-sharded sampling is off
    assert "requests with min_p (not in --request-features) compile on first use" in listed
