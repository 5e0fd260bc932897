"""moe-lora family (vLLM 0.33, ``--enable-lora``): vLLM's LoRA manager wraps the MoE layers on meta, each kind's
``MoELoRAContext`` is recorded, and the experts are swept with it over every token count -- the fused MoE-LoRA
Triton kernels (small-batch / one-shot) and the base GEMMs as they run next to them; build workers reach the same
keys; what is not planned (dense punica LoRA kernels, fully sharded LoRA at TP > 1) is said.  The sweep is checked
against vLLM's own LoRA-wrapped MoE layer (``tests/independent/moe_lora_layer.py``), not against aotwarm's rebuild."""

import collections
import hashlib
import json

import pytest

from aotwarm.plan import ServingArgs
from aotwarm.targets import resolve_target

from aotwarm.probe import probe_plan
from tests.conftest import requires_vllm_stack, run_cli
from tests.independent.child import Child
from tests.test_moe_layer_independent import comparable
from tests.test_planner_fused_moe import QWEN3_30B_FP8, TP2, family, kinds
from tests.vllm_plans import vllm_plan

LORA = ("--enable-lora", "--max-loras", "4")
TOKENS = ("--max-num-batched-tokens", "512")


def lora_plan(rank: int, *extra: str):
    return vllm_plan(QWEN3_30B_FP8, *TP2, *LORA, "--max-lora-rank", str(rank), *TOKENS, *extra,
                     families=("moe-lora", "fused-moe"))


@requires_vllm_stack
@pytest.mark.parametrize("rank,small_batch,one_shot", [(16, 6, 26), (64, 3, 34)])
def test_lora_experts_are_swept_with_vllms_lora_context(rank, small_batch, one_shot):
    plan = lora_plan(rank)
    (kind,) = kinds(plan)
    lora = kind["lora"]
    assert lora["layer_class"].endswith(":FusedMoEWithLoRA") and kind["experts"].endswith(":TritonExperts")
    ctx = lora["context"]
    assert ctx["max_loras"] == 4 and ctx["w13_num_slices"] == 2 and ctx["tp_size"] == 2
    # vLLM's stacked LoRA weights for the TP-2 shard: (slots, experts, rank, hidden) / (slots, experts, 384, rank)
    w13_a = [t["__tensor__"]["shape"] for t in ctx["w13_lora_a_stacked"]["__list__"]]
    w13_b = [t["__tensor__"]["shape"] for t in ctx["w13_lora_b_stacked"]["__list__"]]
    assert w13_a == [[4, 128, rank, 2048]] * 2 and w13_b == [[4, 128, 384, rank]] * 2
    fam = family(plan, "moe-lora")
    assert fam.status == "planned" and family(plan, "fused-moe").status == "not-applicable"
    assert any("lora_shrink / lora_expand" in u for u in fam.uncovered)  # dense layers' LoRA: said, not planned
    # build workers (another process, vLLM's punica wrapper and context rebuilt) reach exactly the swept keys
    probed = probe_plan(plan, jobs=2)
    every = set().union(*(set(g["keys"]) for g in kind["sweep"]))
    assert {hashlib.sha256(k.encode()).hexdigest()[:16] for k in probed.probe["jit_keys"]} == every
    per_kernel = collections.Counter(k.split("|", 1)[0] for k in probed.probe["jit_keys"])
    # the base FP8 GEMMs as without LoRA (36 keys over 512 M), plus vLLM's LoRA kernels for w13 and w2:
    # small-batch with naive block assignment (M * top_k * 8 <= local experts * slots = 512) and
    # M * top_k * rank <= 1024, i.e. M <= 8 at rank 16 and M <= 2 at rank 64; one-shot beyond (config by M,
    # narrowed to the rank)
    assert per_kernel == {"fused_moe_kernel": 36, "_fused_moe_lora_small_batch_kernel": small_batch,
                          "_fused_moe_lora_one_shot_kernel": one_shot}


@requires_vllm_stack
def test_fully_sharded_lora_at_tp2_is_stated_not_planned():
    plan = lora_plan(16, "--fully-sharded-loras", "--max-num-batched-tokens", "64", "--max-num-seqs", "16")
    (kind,) = kinds(plan)
    assert "lora" not in kind and "TP group" in kind["lora_unbuilt"]
    fam = family(plan, "moe-lora")
    assert any("fused MoE-LoRA Triton kernels" in u and "TP group" in u for u in fam.uncovered)


@requires_vllm_stack
def test_without_lora_the_family_is_not_applicable():
    plan = vllm_plan(QWEN3_30B_FP8, *TP2, families=("moe-lora",))  # the fused-moe tests' resolution
    assert family(plan, "moe-lora").status == "not-applicable" and plan.items == []


@pytest.mark.slow
@requires_vllm_stack
def test_moe_lora_keys_compile_gpu_less(tmp_path):
    """The smallest serving batch keeps it short: every key of M 1..64 with LoRA compiled for sm90 GPU-less."""
    out = tmp_path / "lora.tar.zst"
    proc = run_cli("build", str(QWEN3_30B_FP8), "--gpu", "h200", "--engine", "vllm", "--family", "moe-lora",
                   "--no-launchers", "-j", "2", "-o", str(out), "--json", "--", *TP2, *LORA, "--max-lora-rank", "16",
                   "--max-num-batched-tokens", "64", "--max-num-seqs", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0 and summary["cache_entries"] == summary["planned_jit_keys"] > 10
    plan = vllm_plan(QWEN3_30B_FP8, *TP2, *LORA, "--max-lora-rank", "16", "--max-num-batched-tokens", "64",
                     "--max-num-seqs", "16", families=("moe-lora",))  # the build's resolution (cached)
    assert {k.kernel for k in family(plan, "moe-lora").kernels} >= {"_fused_moe_lora_small_batch_kernel",
                                                                     "_fused_moe_lora_one_shot_kernel"}


@pytest.mark.slow
@requires_vllm_stack
def test_sweep_equals_vllms_own_lora_wrapped_layer(tmp_path):
    """The plan's sweep (aotwarm's record of the LoRA context, vLLM's punica wrapper rebuilt, metadata laid out by
    aotwarm) against vLLM's own: its LoRA manager wraps the model, adds ``max_loras`` adapters, and per token count
    a random mix of requests on adapters (or none) goes through ``set_active_adapters`` before the layer's
    ``forward_modular`` -- every token count, key for key."""
    (tmp_path / "config.json").write_text(QWEN3_30B_FP8.read_text())
    target = json.dumps(resolve_target("h200").target.to_dict())
    child = Child(tmp_path, ["-m", "tests.independent.moe_lora_layer", "keys", str(tmp_path), target, "--", *TP2,
                             *LORA, "--max-lora-rank", "64", *TOKENS])
    planned = {k["layer"]: k for k in ServingArgs.from_dict(lora_plan(64).serving).vllm["moe"] if "sweep" in k}
    independent = child.result(timeout=900)
    assert planned and set(independent["kinds"]) == set(planned)
    for layer, kind in planned.items():
        own = independent["kinds"][layer]
        assert kind["experts"].endswith(":" + own["experts"])
        assert sum(g["count"] for g in own["groups"]) == 512
        assert comparable(kind["sweep"]) == comparable(own["groups"]), layer
