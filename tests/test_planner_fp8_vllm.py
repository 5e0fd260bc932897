"""FP8 block models planned from the layers vLLM builds (vLLM 0.33, H200): which linears go to DeepGEMM and
with which per-rank shapes (``vllm_resolve._fp8_linears``: the method's ``use_deep_gemm`` and vLLM's per-call
shape check), and the FP8 MoE experts vLLM picks (``fused-moe``) — for linear-attention and MLA models that no
config-derived rule knew: Qwen3-Next-80B-A3B FP8 at TP 4 and DeepSeek-V3 at TP 8."""

from pathlib import Path

from tests.conftest import requires_vllm_stack
from tests.test_planner_moe_vllm import CONFIGS
from tests.vllm_plans import vllm_plan

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = ("deepgemm", "fused-moe")


def shapes(plan):
    return {(i.params["n"], i.params["k"]): i.reason for i in plan.items if i.family == "deepgemm"}


def family(plan, name):
    return next(f for f in plan.families if f.family == name)


@requires_vllm_stack
def test_qwen3_next_fp8_tp4_plans_the_linear_attention_projections():
    plan = vllm_plan(FIXTURES / "Qwen--Qwen3-Next-80B-A3B-Instruct-FP8.json", "--tensor-parallel-size", "4",
                     families=FAMILIES)
    got = shapes(plan)
    # hidden 2048; GDN in_proj_qkvz (16 K heads x 128 x 2 + 32 V heads x 128 x 2) / 4 = 3072, out_proj K = 4096/4
    assert "linear_attn.in_proj_qkvz" in got[(3072, 2048)]
    assert "linear_attn.out_proj" in got[(2048, 1024)] and "self_attn.o_proj" in got[(2048, 1024)]
    assert "self_attn.qkv_proj" in got[(2560, 2048)]
    assert "shared_expert.gate_up_proj" in got[(256, 2048)]
    dg = family(plan, "deepgemm")
    assert dg.status == "planned" and "vLLM built" in dg.summary
    moe = family(plan, "fused-moe")
    assert moe.status == "planned" and "Fp8MoEMethod" in moe.summary and "TritonExperts" in moe.summary


@requires_vllm_stack
def test_deepseek_v3_tp8_plans_mla_dense_and_shared_expert_linears_and_the_fp8_moe():
    plan = vllm_plan(FIXTURES / "deepseek-ai--DeepSeek-V3.json", "--tensor-parallel-size", "8", families=FAMILIES)
    got = shapes(plan)
    # MLA: fused q_a + kv_a (1536 + 512 + 64 rope) replicated; q_b 128 heads x 192 / 8; kv_b 128 x (128 + 128) / 8;
    # o 128 x 128 / 8 -> 7168; first_k_dense_replace = 3 dense MLPs (18432 / 8); one shared expert (2048 / 8)
    assert set(got) == {(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
                        (512, 7168), (7168, 256)}
    assert "fused_qkv_a_proj x61" in got[(2112, 7168)] and "kv_b_proj x61" in got[(4096, 512)]
    assert "mlp.gate_up_proj x3" in got[(4608, 7168)]
    (kind,) = plan.serving["vllm"]["moe"]
    assert kind["kernel"]["global_num_experts"] == 256 and kind["layers"] == 58
    assert family(plan, "fused-moe").status == "planned"


@requires_vllm_stack
def test_dense_qwen3_fp8_shapes_agree_with_the_config_rule():
    plan = vllm_plan(CONFIGS / "Qwen--Qwen3-8B-FP8.json", families=("deepgemm",))
    assert set(shapes(plan)) == {(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)}
