"""Real GPU-less compiles of vLLM 0.33's GDN kernels for three arches (slow: the Triton compiler runs).

Dispatch differs by arch: sm80 runs the Triton/FLA chunk prefill (100 configs: chunk_o has three
warp choices off Hopper); sm90 and sm100 send prefill to FlashInfer by default, so their plans hold
the conv / post-conv / norm / decode kernels only, and sm100 adds the BV=4/8 packed-decode variants.
"""

import json

import pytest

from aotwarm.bundle import read_bundle
from tests.conftest import QWEN35_9B, run_cli

pytest.importorskip("vllm", reason="vLLM 0.33 is installed by `make test`")

SERVING = ["--engine", "vllm", "--max-num-batched-tokens", "2048", "--max-num-seqs", "64", "--no-launchers", "-j", "2"]
GDN_DECODE_AND_MISC = {"_causal_conv1d_fwd_kernel", "_fused_post_conv_kernel", "layer_norm_fwd_kernel",
                       "_causal_conv1d_update_kernel", "fused_recurrent_gated_delta_rule_packed_decode_kernel",
                       "fused_sigmoid_gating_delta_rule_update_kernel"}
CHUNK = {"chunk_local_cumsum_scalar_kernel", "chunk_scaled_dot_kkt_fwd_kernel", "merge_16x16_to_64x64_inverse_kernel",
         "recompute_w_u_fwd_kernel", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "chunk_fwd_kernel_o"}


@pytest.mark.slow
@pytest.mark.parametrize("gpu,arch,chunk", [("sm80", 80, True), ("sm90", 90, False), ("sm100", 100, False)])
def test_vllm_gdn_kernels_compile_gpu_less(tmp_path, gpu, arch, chunk):
    out = tmp_path / f"{gpu}.tar.zst"
    proc = run_cli("build", str(QWEN35_9B), "--gpu", gpu, *SERVING, "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0
    assert summary["cache_entries"] == summary["planned_jit_keys"]
    manifest = read_bundle(out)
    names = {f["path"].rsplit("/", 1)[1].removesuffix(".cubin") for f in manifest["files"] if f["path"].endswith(".cubin")}
    assert names == (GDN_DECODE_AND_MISC | CHUNK if chunk else GDN_DECODE_AND_MISC)
    assert manifest["engine"]["name"] == "vllm" and manifest["engine"]["version"].startswith("0.33.")
    assert manifest["target"]["capability"] == [arch // 10, arch % 10]
    gdn = next(c for c in manifest["coverage"] if c["family"] == "gdn")
    assert gdn["status"] == "planned"
    assert any("GDN chunked prefill" in u for u in gdn["uncovered"]) == (not chunk)
    if chunk:
        assert summary["planned_jit_keys"] > 100  # 100 chunk configs + the misc kernels
    # the workers report which vLLM platform answered the kernels' device queries
    assert manifest["engine_runtime"]["vllm_platform"] in (["vllm"], ["aotwarm-shim"])
