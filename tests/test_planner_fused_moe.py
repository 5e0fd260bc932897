"""fused-moe family (vLLM 0.33): the experts kernel vLLM builds for each MoE layer kind, swept over every
token count by vLLM's own ``FusedMoEKernel.apply`` (key-only), planned as the fewest token counts that
reach every key, GPU-less compiles of them, and the safety of the kernel description in plans."""

import hashlib
import json

import pytest

from aotwarm.engines import vllm_codec
from aotwarm.errors import BadInput
from aotwarm.model import load_model
from aotwarm.plan import ServingArgs
from aotwarm.planners import fused_moe, make_plan
from aotwarm.probe import audit_plan, probe_plan
from aotwarm.targets import resolve_target
from tests.conftest import requires_vllm_stack, run_cli
from tests.test_planner_moe_vllm import CONFIGS, engine_info
from tests.vllm_plans import vllm_plan

QWEN3_30B_FP8 = CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json"
QWEN35_35B = CONFIGS / "Qwen--Qwen3.5-35B-A3B.json"
TP2 = ("--tensor-parallel-size", "2")


def family(plan, name="fused-moe"):
    return next(f for f in plan.families if f.family == name)


def kinds(plan):
    return ServingArgs.from_dict(plan.serving).vllm["moe"]


@requires_vllm_stack
def test_qwen3_30b_fp8_tp2_is_vllms_triton_experts_swept_over_every_m():
    plan = vllm_plan(QWEN3_30B_FP8, *TP2, families=("fused-moe", "deepgemm"))
    (kind,) = kinds(plan)
    assert kind["experts"].endswith(":TritonExperts") and kind["backend"] == "fp8_backend=TRITON"
    assert kind["layers"] == 48 and kind["max_tokens"] == 8192
    # vLLM's FP8 config, as vLLM built it: 128x128 blocks, the TP shard of the experts
    assert kind["kernel"]["w13"]["tensor"]["shape"] == [128, 768, 2048] and kind["kernel"]["w2"]["tensor"]["shape"] == [128, 2048, 384]
    groups = kind["sweep"]
    assert sum(g["count"] for g in groups) == 8192 and groups[0]["first"] == 1
    every = set().union(*(set(g["keys"]) for g in groups))
    chosen = {i.params["tokens"] for i in plan.items if i.family == "fused-moe"}
    assert set().union(*(set(g["keys"]) for g in groups if g["first"] in chosen)) == every
    assert family(plan).status == "planned" and "TritonExperts" in family(plan).summary
    # the DeepGEMM family names vLLM's choice for the experts instead of guessing it
    assert any("vLLM chose TritonExperts" in u for u in family(plan, "deepgemm").uncovered)

    # a probe in build workers (another process, the plan's items only) reaches exactly the swept keys
    probed = probe_plan(plan, jobs=2)
    moe_keys = {k for k in probed.probe["jit_keys"] if k.startswith("fused_moe_kernel|")}
    assert {hashlib.sha256(k.encode()).hexdigest()[:16] for k in moe_keys} == every
    report = audit_plan(probed, samples=6, seed=7)
    assert report.failures == [] and report.outside == []


@requires_vllm_stack
def test_bf16_moe_with_expert_parallel_uses_vllms_expert_map():
    plan = vllm_plan(QWEN35_35B, *TP2, "--enable-expert-parallel", families=("fused-moe",))
    (kind,) = kinds(plan)
    cfg = kind["kernel"]["moe_config"]["fields"]
    assert cfg["num_experts"] == 256 and cfg["num_local_experts"] == 128
    assert kind["kernel"]["expert_map"] is not None and kind["kernel"]["global_num_experts"] == 256
    assert kind["backend"] == "unquantized_backend=TRITON"
    assert family(plan).status == "planned" and len(plan.items) >= 10


def test_without_vllms_decisions_the_family_says_how_to_get_them():
    spec, src = load_model(str(QWEN3_30B_FP8))
    plan = make_plan(spec, src, resolve_target("h200"), ServingArgs(engine="vllm", families=("fused-moe",)),
                     engine_info())
    fam = family(plan)
    assert fam.status == "not-covered" and plan.items == []
    assert "vLLM 0.33 installed" in fam.uncovered[0]


def test_cover_picks_the_fewest_token_counts():
    groups = [{"first": 1, "last": 1, "count": 1, "keys": ["a", "b"]},
              {"first": 2, "last": 3, "count": 2, "keys": ["b", "c"]},
              {"first": 4, "last": 9, "count": 6, "keys": ["a", "c"]},
              {"first": 10, "last": 10, "count": 1, "keys": ["d"]}]
    assert [g["first"] for g in fused_moe.cover(groups)] == [1, 2, 10]
    assert fused_moe.cover([]) == []


@pytest.mark.parametrize("data", [
    {"__dataclass__": "os:system", "fields": {}},
    {"__enum__": "subprocess:Popen", "name": "x"},
    {"__namedtuple__": "builtins:tuple", "items": []},
    {"__dataclass__": "vllm.nope:Nothing", "fields": {}},
    {"__dtype__": "not_a_dtype"},
    {"surprise": 1},
    ["not", "tagged"],
])
def test_plans_name_only_vllms_config_classes(data):
    with pytest.raises(BadInput):
        vllm_codec.decode(data)


@requires_vllm_stack
def test_codec_round_trips_vllms_moe_config():
    plan = vllm_plan(QWEN3_30B_FP8, *TP2, families=("fused-moe",))
    k = kinds(plan)[0]["kernel"]

    def on_cpu(data):  # a device vLLM placed things on (its GPU, meta while resolving) is rebuilt on the worker's
        if isinstance(data, dict):
            if set(data) == {"__device__"} and data["__device__"].split(":")[0] in ("cuda", "meta"):
                return {"__device__": "cpu"}
            return {key: on_cpu(value) for key, value in data.items()}
        return [on_cpu(v) for v in data] if isinstance(data, list) else data

    for name in ("moe_config", "quant_config"):
        assert vllm_codec.encode(vllm_codec.decode(k[name])) == on_cpu(k[name])
    assert '"__device__"' in json.dumps(k["moe_config"])  # the case above is exercised


@pytest.mark.slow
@requires_vllm_stack
def test_fp8_moe_keys_compile_gpu_less(tmp_path):
    """The smallest serving batch keeps it short: every key of M 1..64 compiled for sm90 without a GPU."""
    out = tmp_path / "moe.tar.zst"
    proc = run_cli("build", str(QWEN3_30B_FP8), "--gpu", "h200", "--engine", "vllm", "--family", "fused-moe",
                   "--no-launchers", "-j", "2", "-o", str(out), "--json", "--", *TP2,
                   "--max-num-batched-tokens", "64", "--max-num-seqs", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0 and summary["planned_jit_keys"] > 10
    assert summary["cache_entries"] == summary["planned_jit_keys"]


@requires_vllm_stack
def test_experts_vllm_runs_outside_triton_are_stated_with_what_runs():
    """GPTQ int4 MoE: vLLM 0.33 picks its Humming experts (an NVRTC JIT) -- not swept, said so."""
    plan = vllm_plan(CONFIGS / "Qwen--Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4.json", families=("fused-moe",))
    fam = family(plan)
    assert fam.status == "not-covered" and plan.items == []
    assert "HummingIndexedExperts" in fam.uncovered[0] and "NVRTC" in fam.uncovered[0]


FIXTURES = CONFIGS.parents[1] / "tests" / "fixtures"
W8A8_INT8 = FIXTURES / "constructed--Qwen3-30B-A3B-quantized.w8a8.json"
FP8_DYNAMIC = FIXTURES / "constructed--Qwen3-30B-A3B-FP8-dynamic.json"


@requires_vllm_stack
def test_int8_w8a8_moe_is_vllms_triton_int8_experts():
    plan = vllm_plan(W8A8_INT8, *TP2, families=("fused-moe",))
    (kind,) = kinds(plan)
    assert kind["method"] == "CompressedTensorsW8A8Int8MoEMethod" and kind["backend"] == "int8_backend=TRITON"
    assert kind["experts"].endswith(":TritonExperts") and kind["kernel"]["w13"]["tensor"]["dtype"] == "int8"
    assert family(plan).status == "planned" and len(plan.items) == len(fused_moe.cover(kind["sweep"])) > 10


@requires_vllm_stack
def test_online_per_tensor_fp8_quantizes_on_meta_and_plans_the_triton_experts():
    """``--quantization fp8`` on a bf16 checkpoint: vLLM quantizes the experts at load (its CUDA op, a no-op on
    meta) and runs its Triton FP8 experts with per-tensor scales."""
    plan = vllm_plan(QWEN35_35B, *TP2, "--quantization", "fp8", families=("fused-moe",))
    (kind,) = kinds(plan)
    assert kind["method"] == "Fp8PerTensorOnlineMoEMethod" and kind["experts"].endswith(":TritonExperts")
    assert kind["kernel"]["w13"]["tensor"]["dtype"] == "float8_e4m3fn" and family(plan).status == "planned"


@requires_vllm_stack
def test_per_channel_fp8_runs_cutlass_on_sm90_and_triton_only_below_nine_tokens_on_sm100():
    """compressed-tensors FP8 (per-channel weights, dynamic per-token activations): vLLM picks its CUTLASS
    experts with a Triton fallback that only sm100 uses (M <= 8).  The sweep, not a rule copied here, says so."""
    small = ("--max-num-batched-tokens", "512")  # the sm100 fallback's bound (M <= 8) is far inside it
    h200 = vllm_plan(FP8_DYNAMIC, *small, families=("fused-moe",))
    (kind,) = kinds(h200)
    assert kind["experts"].endswith(":TritonOrCutlassExperts") and not any(g["keys"] for g in kind["sweep"])
    assert family(h200).status == "not-applicable" and h200.items == []
    assert "launched no Triton kernel on NVIDIA H200: it runs CUTLASS" in family(h200).summary
    b200 = vllm_plan(FP8_DYNAMIC, *small, gpu="b200", families=("fused-moe",))
    (kind,) = kinds(b200)
    with_keys = [g for g in kind["sweep"] if g["keys"]]
    assert with_keys and max(g["last"] for g in with_keys) == 8 and family(b200).status == "planned"
