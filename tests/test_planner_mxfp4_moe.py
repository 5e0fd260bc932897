"""mxfp4-moe family (vLLM 0.33, gpt-oss): vLLM's MXFP4 experts swept over every token count through the kernel
object vLLM built (``triton_kernels`` routing + ``matmul_ogs``), the counts explained, TP, sm100 stated, the
record of ``triton_kernels``' swizzled weights, a GPU-less compile, and the keys checked against vLLM's own
weight conversion run independently of the plan (``tests/independent/mxfp4_experts.py``)."""

import collections
import hashlib
import json
import os

import pytest

from aotwarm.engines import vllm_codec
from aotwarm.errors import BadInput
from aotwarm.planners import fused_moe
from aotwarm.probe import probe_plan
from aotwarm.targets import resolve_target
from tests.conftest import requires_vllm_stack, run_cli
from tests.independent.child import Child
from tests.test_planner_fused_moe import family, kinds
from tests.test_planner_moe_vllm import CONFIGS
from tests.vllm_plans import vllm_plan

GPT_OSS = CONFIGS / "openai--gpt-oss-20b.json"
FAMILIES = ("mxfp4-moe", "fused-moe", "engine-layers")
SMALL = ("--max-num-batched-tokens", "256", "--max-num-seqs", "16")  # the compile and independent checks


def cdiv(a, b):
    return -(-a // b)


@requires_vllm_stack
def test_gpt_oss_on_sm90_is_vllms_triton_kernels_experts_swept_over_every_m():
    plan = vllm_plan(GPT_OSS, families=FAMILIES)
    (kind,) = kinds(plan)
    assert kind["method"] == "GptOssMxfp4MoEMethod" and kind["backend"] == "mxfp4_backend=TRITON"
    assert kind["experts"].endswith(":OAITritonMxfp4ExpertsMonolithic") and kind["kernel"]["monolithic"]
    # what vLLM's weight conversion set for the whole process on sm90, re-applied wherever the kernel is rebuilt
    assert kind["kernel"]["triton_kernels_state"] == {"opt_flags_constraints": {"split_k": 1}}
    assert kind["layers"] == 24 and kind["max_tokens"] == 8192
    # the swizzled weight as vLLM made it: a triton_kernels tensor of logical shape (E, K, N) on a Hopper layout
    w13 = kind["kernel"]["w13"]["data"]["fields"]
    assert w13["shape"]["__list__"] == [32, 2880, 5760]
    assert w13["storage"]["fields"]["layout"]["__object__"].endswith(":HopperMXValueLayout")
    groups = kind["sweep"]
    assert sum(g["count"] for g in groups) == 8192
    every = set().union(*(set(g["keys"]) for g in groups))
    chosen = {i.params["tokens"] for i in plan.items if i.family == "mxfp4-moe"}
    assert set().union(*(set(g["keys"]) for g in groups if g["first"] in chosen)) == every
    fam = family(plan, "mxfp4-moe")
    assert fam.status == "planned" and "OAITritonMxfp4ExpertsMonolithic" in fam.summary
    assert {k.kernel for k in fam.kernels} >= {"_matmul_ogs", "_topk_forward", "_sum_bitmatrix_rows"}
    assert family(plan, "fused-moe").status == "not-applicable" and "mxfp4-moe" in family(plan, "fused-moe").summary
    assert any("the mxfp4-moe family" in c for k in family(plan, "engine-layers").kernels for c in k.classes)

    # the counts, explained: triton_kernels' top-k passes the bitmatrix's column stride, cdiv(M, 32) * 32, as a
    # constexpr, and Triton specializes M itself (== 1, divisible by 16): a new key every 16 tokens
    probed = probe_plan(plan, jobs=2)
    per_kernel = collections.Counter(k.split("|", 1)[0] for k in probed.probe["jit_keys"])
    classes = {(cdiv(m, 32), m % 16 == 0, m == 1) for m in range(1, 8193)}
    assert per_kernel["_topk_forward"] == per_kernel["_sum_bitmatrix_rows"] == len(classes) == 513
    assert 10 < per_kernel["_matmul_ogs"] < 100  # block_m buckets x M classes of the two GEMMs
    assert len(probed.probe["jit_keys"]) == len(every)


@requires_vllm_stack
def test_gpt_oss_tp2_shards_the_experts_and_sm100_is_stated():
    tp2 = vllm_plan(GPT_OSS, "--tensor-parallel-size", "2", *SMALL, families=FAMILIES)
    (kind,) = kinds(tp2)
    # the 1440-wide shard, padded by vLLM's MXFP4 rounding (to a multiple of 64 for the Triton backend)
    assert kind["kernel"]["moe_config"]["fields"]["intermediate_size_per_partition"] == 1472
    assert kind["kernel"]["w13"]["data"]["fields"]["shape"]["__list__"] == [32, 2880, 2 * 1472]
    assert family(tp2, "mxfp4-moe").status == "planned" and tp2.items
    b200 = vllm_plan(GPT_OSS, gpu="b200", families=FAMILIES)
    fam = family(b200, "mxfp4-moe")
    assert fam.status == "not-covered" and b200.items == []
    assert "TrtLlmMxfp4ExpertsMonolithic" in fam.uncovered[0] and "FlashInfer's TRT-LLM MoE" in fam.uncovered[0]


def test_bf16_and_fp8_moe_are_not_mxfp4():
    assert fused_moe.is_mxfp4({"method": "GptOssMxfp4MoEMethod"})
    assert not fused_moe.is_mxfp4({"method": "Fp8MoEMethod"}) and not fused_moe.is_mxfp4({})


@pytest.mark.parametrize("data", [
    {"__object__": "os:PathLike", "attrs": {}},
    {"__object__": "triton_kernels.tensor:Tensor", "attrs": {}},  # a dataclass, not a plain-state layout
    {"__object__": "vllm.config:VllmConfig", "attrs": {}},
])
def test_plain_state_objects_are_only_triton_kernels_layouts(data):
    with pytest.raises(BadInput):
        vllm_codec.decode(data)


@requires_vllm_stack
def test_codec_round_trips_triton_kernels_weights():
    plan = vllm_plan(GPT_OSS, families=("mxfp4-moe",))
    k = kinds(plan)[0]["kernel"]
    for name in ("w13", "w2"):
        assert vllm_codec.encode(vllm_codec.decode(k[name]["data"])) == k[name]["data"]
    assert vllm_codec.encode(vllm_codec.decode(k["quant_config"])) == k["quant_config"]


@pytest.mark.slow
@requires_vllm_stack
def test_mxfp4_keys_match_vllms_own_conversion_and_compile_gpu_less(tmp_path):
    """Every M of a 256-token serving config: the plan's key groups equal those of vLLM's experts built from
    config.json by vLLM's own weight conversion (no aotwarm record), and every key compiles for sm90 GPU-less."""
    target = json.dumps(resolve_target("h200").target.to_dict())
    (tmp_path / "h").mkdir()
    harness = Child(tmp_path / "h", ["-m", "tests.independent.mxfp4_experts", "keys", str(GPT_OSS), "1", target,
                                     "256"], {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    out = tmp_path / "mxfp4.tar.zst"
    proc = run_cli("build", str(GPT_OSS), "--gpu", "h200", "--engine", "vllm", "--family", "mxfp4-moe",
                   "--no-launchers", "-j", "2", "-o", str(out), "--json", "--", *SMALL)
    independent = harness.result(timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0 and summary["cache_entries"] == summary["planned_jit_keys"] > 20
    plan = vllm_plan(GPT_OSS, *SMALL, families=("mxfp4-moe",))
    (kind,) = kinds(plan)
    assert [(g["first"], g["last"], g["count"], g["keys"]) for g in kind["sweep"]] == \
           [(g["first"], g["last"], g["count"], g["keys"]) for g in independent["groups"]]
    # and the build workers' rebuild (another process: vLLM's process-wide triton_kernels choices re-applied)
    built = {hashlib.sha256(k.encode()).hexdigest()[:16] for k in probe_plan(plan, jobs=2).probe["jit_keys"]}
    assert built == set().union(*(set(g["keys"]) for g in independent["groups"]))


@requires_vllm_stack
def test_with_lora_vllm_picks_marlin_and_the_moe_lora_kernels_are_stated():
    """``--enable-lora``: vLLM's oracle leaves the triton_kernels experts (no LoRA support) for Marlin; the fused
    MoE-LoRA Triton kernels vLLM adds are not planned by this aotwarm -- said, not silent."""
    plan = vllm_plan(GPT_OSS, "--enable-lora", "--max-loras", "4", "--max-lora-rank", "16",
                     families=("mxfp4-moe", "moe-lora"))
    (kind,) = kinds(plan)
    assert kind["backend"] == "mxfp4_backend=MARLIN" and kind["experts"].endswith(":MarlinExperts")
    assert family(plan, "mxfp4-moe").status == "not-applicable" and "moe-lora" in family(plan, "mxfp4-moe").summary
    fam = family(plan, "moe-lora")
    assert fam.status == "not-covered" and plan.items == []
    assert any("fused MoE-LoRA Triton kernels" in u and "compile on the node" in u for u in fam.uncovered)
    assert any("Marlin" in u for u in fam.uncovered)
    assert any(u.startswith("LoRA (max_loras 4, max_lora_rank 16)") and "lora_shrink" in u for u in fam.uncovered)
