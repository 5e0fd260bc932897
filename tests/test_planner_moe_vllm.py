"""vLLM 0.33 MoE families: WNA16 (fused_moe_kernel_gptq_awq) and the shared-expert gate.

Counts come from the symbolic M sweep; the slow tests check them against vLLM's own kernels
(probe: one distinct JIT key per work item; audit: random M values reach no other key) and
compile them GPU-less.  ``tests/vllm_shims`` makes vLLM's fused-MoE package importable where its
compiled extensions cannot load (see that file).
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from aotwarm.engines import EngineInfo
from aotwarm.errors import BadInput
from aotwarm.model import load_model
from aotwarm.plan import ServingArgs
from aotwarm.planners import make_plan
from aotwarm.targets import resolve_target
from tests.conftest import requires_vllm_stack, run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "aotwarm" / "configs"
GPTQ_MOE = CONFIGS / "Qwen--Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4.json"
QWEN2_57B = CONFIGS / "Qwen--Qwen2-57B-A14B.json"
QWEN35_35B = CONFIGS / "Qwen--Qwen3.5-35B-A3B.json"
GPTQ_INT4 = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
SHIMS = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "vllm_shims"), str(ROOT)])}


def engine_info() -> EngineInfo:
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    location = list(spec.submodule_search_locations)[0] if spec else "/nowhere"
    return EngineInfo("vllm", "vllm", "0.33.0", "0" * 64, location)


def moe_plan(path, quant=None, gpu="sm90", families=("moe-wna16",), **serving):
    spec, src = load_model(str(path))
    if quant is not None:
        spec = dataclasses.replace(spec, quantization=quant)
    args = ServingArgs(engine="vllm", families=families, **{"moe_backend": "triton", **serving})
    return make_plan(spec, src, resolve_target(gpu), args, engine_info())


def first_m(plan, gemm):
    return [i.params["tokens"] for i in plan.items if i.params["gemm"] == gemm]


def test_wna16_sweep_qwen15_moe_gptq_explained():
    """Qwen1.5-MoE-A2.7B GPTQ-Int4: E=60, top_k=4, group 128, 8192 tokens, no tuned JSON for H100.

    BLOCK_SIZE_M: should_moe_wna16_use_cuda holds while M*4/60 <= 6 (M <= 90): BM = min(16,
    next_pow2(M)) -> 1 (M=1), 2 (M=2), 4 (3-4), 8 (5-8), 16 (9-90); then BM=64 (M > 40).
    GEMM1 (gate/up): num_valid_tokens = 4M (class 16 iff M % 4 == 0); EM = moe_align size
    (4M + 60*(BM-1), capped at 4M*BM while 4M < 60, and at M*4*BM when M < BM):
      BM1: M=1 -> EM 4, nvt 4: one key (BLOCK_N/K 32/64 for a single token)
      BM2: M=2 -> EM 16, nvt 8: one key
      BM4: EM 48/64 (class 16); nvt 12 / 16 -> M=3, M=4: two keys
      BM8: EM = 32M (class 16); nvt class 16 only at M=8 -> M=5, M=8: two keys
      BM16: M <= 14: EM = 64M (16); M >= 15: EM = 4M + 900, class 16 iff M % 4 == 3 ->
            (16, other) M=9, (16, 16) M=12, (other, 16) M=16, (other, other) M=17: four keys
      BM64: EM = 4M + 3780, class 16 iff M % 4 == 3 -> M=91, 92, 93: three keys
    = 13 keys; GEMM2 (down, top_k 1, rows 4M) has the same EM and nvt classes (BLOCK_N/K 64/32 even at
    M=1, since 4M != 1) -> 13.  26 work items.  TP shards the intermediate size only (K of GEMM2),
    which changes no class: TP 1, 2, 4 give the same 26.
    """
    for tp in (1, 2, 4):
        plan = moe_plan(GPTQ_MOE, tp=tp)
        assert first_m(plan, "w13") == [1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 91, 92, 93]
        assert first_m(plan, "w2") == first_m(plan, "w13")
        assert len(plan.items) == 26
    assert plan.items[0].params["intermediate"] == 1408 // 4


@pytest.mark.parametrize("path,tp,ep,w13", [
    # EP: local experts E/ep move the CUDA-style threshold (M*top_k/E_local <= 6) and the BM32 bucket
    # appears once it ends below M=40; moe_align still spans the global experts (expert_map).
    (GPTQ_MOE, 1, 2, [1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 46, 47, 48]),          # threshold M <= 45
    (GPTQ_MOE, 1, 4, [1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 23, 24, 25, 41, 43, 44]),  # M <= 22, BM32 23-40
    # Qwen2-57B-A14B (E=64, top_k=8) with an int4 GPTQ config: threshold M <= 48; nvt = 8M
    (QWEN2_57B, 1, 1, [1, 2, 3, 4, 5, 6, 9, 10, 49, 50]),
    (QWEN2_57B, 2, 1, [1, 2, 3, 4, 5, 6, 9, 10, 49, 50]),
    (QWEN2_57B, 4, 1, [1, 2, 3, 4, 5, 6, 9, 10, 49, 50]),
    (QWEN2_57B, 1, 2, [1, 2, 3, 4, 5, 6, 9, 10, 25, 26, 41, 42]),
    (QWEN2_57B, 1, 4, [1, 2, 3, 4, 5, 6, 9, 10, 21, 22, 41, 42]),
    # Qwen3.5-35B-A3B (E=256, top_k=8) with an int4 GPTQ config: threshold M <= 192
    (QWEN35_35B, 1, 1, [1, 2, 3, 4, 5, 6, 9, 10, 33, 193, 194]),
    (QWEN35_35B, 2, 1, [1, 2, 3, 4, 5, 6, 9, 10, 33, 193, 194]),
    (QWEN35_35B, 4, 1, [1, 2, 3, 4, 5, 6, 9, 10, 33, 193, 194]),
    (QWEN35_35B, 1, 2, [1, 2, 3, 4, 5, 6, 9, 10, 33, 97, 98]),
    (QWEN35_35B, 1, 4, [1, 2, 3, 4, 5, 6, 9, 10, 33, 49, 50]),
])
def test_wna16_sweep_counts(path, tp, ep, w13):
    plan = moe_plan(path, quant=None if path == GPTQ_MOE else GPTQ_INT4, tp=tp, ep=ep)
    assert first_m(plan, "w13") == w13
    assert len(first_m(plan, "w2")) == len(w13) and len(plan.items) == 2 * len(w13)
    params = plan.items[0].params
    spec, _ = load_model(str(path))
    assert params["num_experts"] == spec.num_experts // ep
    assert params["intermediate"] == spec.moe_intermediate_size // tp
    assert params["align_experts"] == spec.num_experts


def test_wna16_backend_choice_is_stated():
    auto = moe_plan(GPTQ_MOE, moe_backend="auto")
    fam = auto.families[0]
    assert fam.status == "not-covered" and not auto.items
    assert "Marlin" in fam.summary and "--moe-backend triton" in fam.summary
    awq = moe_plan(GPTQ_MOE, quant={"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True})
    assert awq.families[0].status == "not-covered" and "AutoAWQ" in awq.families[0].summary
    desc = moe_plan(GPTQ_MOE, quant={**GPTQ_INT4, "desc_act": True})
    assert desc.families[0].status == "not-covered" and "activation ordering" in desc.families[0].summary
    native = moe_plan(GPTQ_MOE, quant={"quant_method": "moe_wna16", "bits": 4, "group_size": 128}, moe_backend="auto")
    assert native.families[0].status == "planned" and native.items
    dense = moe_plan(QWEN2_57B)
    assert dense.families[0].status == "not-applicable"


def test_wna16_zero_points_and_int8():
    zp = moe_plan(GPTQ_MOE, quant={**GPTQ_INT4, "sym": False})
    assert all(i.params["has_zp"] for i in zp.items)
    int8 = moe_plan(GPTQ_MOE, quant={**GPTQ_INT4, "bits": 8})
    # 8-bit never takes the CUDA-style small BLOCK_SIZE_M: buckets 16 / 32 / 64 only
    assert {i.reason.split()[1] for i in int8.items} == {"BM16", "BM32", "BM64"}


def test_wna16_tuned_config_json_is_used(tmp_path, monkeypatch):
    name = "E=60,N=1408,device_name=NVIDIA_H100_80GB_HBM3,dtype=int4_w4a16.json"
    cfg = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "SPLIT_K": 1,
           "num_warps": 4, "num_stages": 3}
    (tmp_path / name).write_text(json.dumps({"1": cfg, "512": {**cfg, "BLOCK_SIZE_M": 64, "num_warps": 8},
                                             "triton_version": "3.6.0"}))
    monkeypatch.setenv("VLLM_TUNED_CONFIG_FOLDER", str(tmp_path))
    plan = moe_plan(GPTQ_MOE)
    assert str(tmp_path / name) in plan.families[0].summary
    # nearest key: M < 257 -> the "1" entry, M >= 257 -> "512"; each with its EM / nvt classes
    assert all(" w4 " in i.reason or " w8 " in i.reason for i in plan.items)
    assert {i.params["tokens"] for i in plan.items if " w8 " in i.reason} and min(
        i.params["tokens"] for i in plan.items if " w8 " in i.reason) >= 257


def test_shared_expert_gate_without_and_with_a_kernel(monkeypatch):
    monkeypatch.delenv("AOTWARM_SHARED_EXPERT_GATE_MODULE", raising=False)
    plan = moe_plan(QWEN2_57B, families=("shared-expert-gate",))
    fam = plan.families[0]
    assert fam.status == "not-applicable" and "no JIT kernel in this engine for this family" in fam.summary
    monkeypatch.setenv("AOTWARM_SHARED_EXPERT_GATE_MODULE", "tests.shared_expert_gate_kernel")
    plan = moe_plan(QWEN2_57B, families=("shared-expert-gate",))
    assert plan.families[0].status == "planned" and len(plan.items) == 1
    assert plan.items[0].params["hidden"] == 3584
    monkeypatch.setenv("AOTWARM_SHARED_EXPERT_GATE_MODULE", "no.such.gate_module")
    with pytest.raises(BadInput, match="AOTWARM_SHARED_EXPERT_GATE_MODULE=no.such.gate_module cannot be imported"):
        moe_plan(QWEN2_57B, families=("shared-expert-gate",))
    no_shared = moe_plan(CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json", families=("shared-expert-gate",))
    assert no_shared.families[0].status == "not-applicable" and "no shared expert" in no_shared.families[0].summary


def test_fp8_block_models_plan_deepgemm_as_gpu_work():
    """The deepgemm family (tests/test_planner_deepgemm.py has the shapes): planned on sm90/sm100, each item
    marked as needing a GPU of the target kind; not applicable where vLLM does not use DeepGEMM."""
    for path in (CONFIGS / "Qwen--Qwen3-8B-FP8.json", CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json"):
        for gpu, status in (("sm90", "planned"), ("sm100", "planned"), ("sm80", "not-applicable")):
            plan = moe_plan(path, gpu=gpu, families=("deepgemm",))
            fam = plan.families[0]
            assert fam.status == status, (path.name, gpu, fam.summary)
            if status == "planned":
                assert plan.items and all(i.needs_gpu for i in plan.items) and "needs a GPU" in fam.summary
    assert moe_plan(GPTQ_MOE, families=("deepgemm",)).families[0].status == "not-applicable"


# -- vLLM's own kernels: probe, audit, GPU-less compile ------------------------------------------------

pytest.importorskip("vllm", reason="vLLM 0.33 is installed by `make test`")


@pytest.mark.slow
def test_wna16_probe_one_key_per_item_and_audit(monkeypatch):
    from aotwarm.probe import audit_plan, probe_plan

    monkeypatch.setenv("PYTHONPATH", SHIMS["PYTHONPATH"])
    plan = probe_plan(moe_plan(GPTQ_MOE, max_num_batched_tokens=2048), jobs=2)
    assert all(i.jit_keys == 1 and list(i.kernels) == ["fused_moe_kernel_gptq_awq"] for i in plan.items)
    assert len(plan.probe["jit_keys"]) == len(plan.items) == 26  # every item is a distinct binary
    report = audit_plan(plan, 60, jobs=2)
    assert report.failures == [] and report.outside == [], report


@pytest.mark.slow
@requires_vllm_stack
def test_wna16_and_gate_compile_gpu_less(tmp_path, monkeypatch):
    """vLLM's WNA16 kernel and the gate kernel compile GPU-less through vLLM's own wrapper, for a plan made
    with the planner's own rules (``--moe-backend triton``): vLLM 0.33 itself does not run this kernel for
    this checkpoint (see the next test), so the plan is made here without vLLM's resolution."""
    from aotwarm.engines import detect_engine
    from aotwarm.probe import probe_plan

    monkeypatch.setenv("AOTWARM_SHARED_EXPERT_GATE_MODULE", "tests.shared_expert_gate_kernel")
    spec, src = load_model(str(GPTQ_MOE))
    plan = make_plan(spec, src, resolve_target("sm90"),
                     ServingArgs(engine="vllm", families=("moe-wna16", "shared-expert-gate"), moe_backend="triton",
                                 max_num_batched_tokens=512), detect_engine("vllm"))
    probe_plan(plan, jobs=2)
    plan.write(tmp_path / "plan.json")
    out = tmp_path / "moe.tar.zst"
    proc = run_cli("build", "--plan", str(tmp_path / "plan.json"), "--no-launchers", "-j", "2", "-o", str(out),
                   "--json", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed_items"] == 0 and summary["cache_entries"] == summary["planned_jit_keys"] == 27
    from aotwarm.bundle import read_bundle

    manifest = read_bundle(out)
    names = {f["path"].rsplit("/", 1)[1].removesuffix(".cubin") for f in manifest["files"] if f["path"].endswith(".cubin")}
    assert names == {"fused_moe_kernel_gptq_awq", "_fused_shared_expert_gate_kernel"}


@pytest.mark.slow
@requires_vllm_stack
def test_vllm_chooses_the_experts_backend():
    """vLLM 0.33 on an H200: this GPTQ checkpoint's experts run on Humming (not the Triton WNA16 kernel), and
    vLLM refuses --moe-backend triton for it ("expert bias is not supported"): both said in vLLM's words."""
    from tests.vllm_plans import vllm_plan

    plan = vllm_plan(GPTQ_MOE, families=("moe-wna16",))
    fam = plan.families[0]
    assert fam.status == "not-covered" and not plan.items
    assert "vLLM chose" in fam.summary and "HUMMING" in fam.summary
    proc = run_cli("plan", str(GPTQ_MOE), "--gpu", "h200", "--engine", "vllm", "--", "--moe-backend", "triton")
    assert proc.returncode == 2 and "vLLM rejects these serving settings" in proc.stderr
    assert "expert bias is not supported" in proc.stderr
