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


def _dsv3_checkpoint(folder: Path, layers: int = 4, shape_of: dict | None = None) -> Path:
    """DeepSeek-V3's config cut to ``layers`` layers (3 dense, then MoE) and a safetensors file holding only
    the header of every tensor those layers have, named and shaped as DeepSeek's checkpoint stores them
    (written here from the published layout, not from vLLM or aotwarm)."""
    import json
    import struct

    cfg = json.loads((FIXTURES / "deepseek-ai--DeepSeek-V3.json").read_text())
    cfg["num_hidden_layers"] = layers
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    header: dict = {}

    def add(name, shape, dtype="BF16"):
        shape = (shape_of or {}).get(name, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}

    def fp8(name, n, k):
        add(f"{name}.weight", [n, k], "F8_E4M3")
        add(f"{name}.weight_scale_inv", [-(-n // 128), -(-k // 128)], "F32")

    add("model.embed_tokens.weight", [cfg["vocab_size"], h])
    add("lm_head.weight", [cfg["vocab_size"], h])
    add("model.norm.weight", [h])
    for i in range(layers):
        p = f"model.layers.{i}."
        add(p + "input_layernorm.weight", [h])
        add(p + "post_attention_layernorm.weight", [h])
        fp8(p + "self_attn.q_a_proj", cfg["q_lora_rank"], h)
        add(p + "self_attn.q_a_layernorm.weight", [cfg["q_lora_rank"]])
        fp8(p + "self_attn.q_b_proj", heads * qk, cfg["q_lora_rank"])
        fp8(p + "self_attn.kv_a_proj_with_mqa", cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], h)
        add(p + "self_attn.kv_a_layernorm.weight", [cfg["kv_lora_rank"]])
        fp8(p + "self_attn.kv_b_proj", heads * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"])
        fp8(p + "self_attn.o_proj", h, heads * cfg["v_head_dim"])
        if i < cfg["first_k_dense_replace"]:
            for name, n, k in (("gate_proj", cfg["intermediate_size"], h), ("up_proj", cfg["intermediate_size"], h),
                               ("down_proj", h, cfg["intermediate_size"])):
                fp8(p + "mlp." + name, n, k)
            continue
        add(p + "mlp.gate.weight", [cfg["n_routed_experts"], h])
        add(p + "mlp.gate.e_score_correction_bias", [cfg["n_routed_experts"]], "F32")
        inter = cfg["moe_intermediate_size"]
        experts = [f"experts.{e}" for e in range(cfg["n_routed_experts"])] + ["shared_experts"]
        for e in experts:
            width = inter * (cfg["n_shared_experts"] if e == "shared_experts" else 1)
            fp8(p + f"mlp.{e}.gate_proj", width, h)
            fp8(p + f"mlp.{e}.up_proj", width, h)
            fp8(p + f"mlp.{e}.down_proj", h, width)
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return folder


@requires_vllm_stack
def test_vllms_weight_loaders_check_a_deepseek_v3_checkpoint_from_its_headers(tmp_path):
    """Every tensor of the checkpoint goes through vLLM's own loaders (TP 8 narrowing, MLA's merged
    fused_qkv_a, experts, scales) as meta tensors: a checkpoint that fits is planned and said to be checked;
    one vLLM's loaders refuse (kv_b_proj with the wrong K) is a one-line error with vLLM's reason."""
    import json

    import os
    import subprocess
    import sys

    def start(folder):  # both plans run at once (each resolves DeepSeek-V3 at TP 8 with vLLM: ~30 s of CPU)
        out = tmp_path / f"{folder.name}.plan.json"
        argv = ["plan", str(folder), "--gpu", "h200", "--engine", "vllm", "--family", "deepgemm", "-o", str(out),
                "--json", "--", "--tensor-parallel-size", "8"]
        return out, subprocess.Popen([sys.executable, "-m", "aotwarm", *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def finish(started):
        out, proc = started
        _, stderr = proc.communicate(timeout=900)
        proc.stderr = stderr
        return proc, (json.loads(out.read_text()) if out.exists() else None)

    good_run = start(_dsv3_checkpoint(tmp_path / "good"))
    bad_run = start(_dsv3_checkpoint(tmp_path / "bad",
                                     shape_of={"model.layers.1.self_attn.kv_b_proj.weight": [32768, 256]}))
    proc, good = finish(good_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dg = next(f for f in good["families"] if f["family"] == "deepgemm")
    assert "checked by vLLM's weight loaders against safetensors headers in" in dg["summary"]
    assert good["serving"]["vllm"]["checkpoint"]["tensors"] == 3 + 4 * (2 + 12) + 3 * 6 + 2 + 257 * 6
    assert {(i["params"]["n"], i["params"]["k"]) for i in good["items"]} >= {(2112, 7168), (3072, 1536), (4096, 512)}

    proc, plan_json = finish(bad_run)
    assert proc.returncode == 2 and plan_json is None
    assert "the config and the weights disagree" in proc.stderr and "vLLM's weight loader says" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
