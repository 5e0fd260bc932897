"""DeepGEMM family (vLLM 0.33): the FP8 128x128 block GEMM shapes and M ranges planned from a config,
the GPU-less build that states the DeepGEMM part as not built (exit 4), --add, and identity refusals.

Shapes per rank (vLLM's QKVParallelLinear / RowParallelLinear / MergedColumnParallelLinear):
qkv N = (heads/tp + 2*max(1, kv_heads/tp)) * head_dim, K = hidden; o N = hidden, K = heads/tp * head_dim;
gate_up N = 2 * intermediate/tp, K = hidden; down N = hidden, K = intermediate/tp.  MoE experts with
--moe-backend deep_gemm: w13 (E_local, 2*I_local, hidden), w2 (E_local, hidden, I_local), M_sum a
multiple of 128 up to round_up(max_tokens*top_k + min(max_tokens*top_k, E_local)*127, 128).
"""

import dataclasses
import json

import pytest

from aotwarm.kinds import deepgemm
from aotwarm.errors import BadInput
from aotwarm.model import load_model
from aotwarm.plan import ServingArgs
from aotwarm.planners import make_plan
from aotwarm.targets import resolve_target
from tests.conftest import requires_vllm_stack, run_cli
from tests.test_planner_moe_vllm import CONFIGS, engine_info

QWEN3_8B = CONFIGS / "Qwen--Qwen3-8B-FP8.json"
QWEN3_30B = CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json"


def dg_plan(path, gpu="sm90", spec_change=None, engine=None, **serving):
    spec, src = load_model(str(path))
    if spec_change:
        spec = dataclasses.replace(spec, **spec_change)
    args = ServingArgs(engine="vllm", families=("deepgemm",), **serving)
    return make_plan(spec, src, resolve_target(gpu), args, engine or engine_info())


def shapes(plan):
    return {(i.op.split(".")[1], i.params["n"], i.params["k"], i.params.get("groups", 1), i.params["m_first"],
             i.params["m_last"], i.params["m_step"]) for i in plan.items}


def family(plan):
    return next(f for f in plan.families if f.family == "deepgemm")


@pytest.mark.parametrize("tp, expected", [
    # Qwen3-8B: hidden 4096, 32 heads / 8 KV heads of 128, intermediate 12288
    (1, {(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)}),
    (2, {(3072, 4096), (4096, 2048), (12288, 4096), (4096, 6144)}),
])
def test_qwen3_8b_fp8_dense_shapes(tp, expected):
    plan = dg_plan(QWEN3_8B, tp=tp)
    assert {(n, k) for _, n, k, *_ in shapes(plan)} == expected
    assert all(i.needs_gpu and i.params["m_first"] == 1 and i.params["m_last"] == 8192 for i in plan.items)
    fam = family(plan)
    assert fam.status == "planned" and len(fam.kernels) == 4
    assert any("FlashInfer" in u and "M < 32" in u for u in fam.uncovered)  # sm90: small M goes to FlashInfer


def test_qwen3_30b_a3b_default_backend_states_the_experts_as_not_deepgemm():
    """Without vLLM's decisions the experts are not assumed to be DeepGEMM: only attention is (the fused-moe
    tests show vLLM's own choice, TritonExperts on sm90 at TP)."""
    plan = dg_plan(QWEN3_30B, tp=2)
    # hidden 2048, 32 heads / 4 KV heads of 128: qkv (16 + 2*2)*128 = 2560, o K = 2048; no dense MLP
    assert {(n, k) for _, n, k, *_ in shapes(plan)} == {(2560, 2048), (2048, 2048)}
    assert any("vLLM's choice" in u for u in family(plan).uncovered)


@pytest.mark.parametrize("tp, ep, w13, w2, bound", [
    # E=128, top_k=8, moe_intermediate 768, 8192 tokens: 8192*8 + min(65536, E_local)*127, rounded to 128
    (1, 1, (128, 1536, 2048), (128, 2048, 768), 65536 + 128 * 127),
    (2, 1, (128, 768, 2048), (128, 2048, 384), 65536 + 128 * 127),
    (1, 2, (64, 1536, 2048), (64, 2048, 768), 65536 + 64 * 127 + 64),  # 73664 rounds up to 73728
])
def test_qwen3_30b_a3b_deepgemm_experts(tp, ep, w13, w2, bound):
    plan = dg_plan(QWEN3_30B, tp=tp, ep=ep, moe_backend="deep_gemm")
    grouped = {(g, n, k, last) for op, n, k, g, first, last, step in shapes(plan) if op.startswith("deepgemm_m_grouped")}
    assert grouped == {(*w13, bound), (*w2, bound)}
    assert bound % 128 == 0
    assert all(i.params["m_step"] == 128 and i.params["top_k"] == 8 for i in plan.items if "groups" in i.params)


def test_not_applicable_cases():
    assert family(dg_plan(QWEN3_8B, dtype="float16")).status == "not-applicable"  # DeepGEMM needs bf16 output
    assert family(dg_plan(QWEN3_8B, gpu="sm89")).status == "not-applicable"  # no DeepGEMM on Ada
    coarse = dg_plan(QWEN3_8B, spec_change={"quantization": {"quant_method": "fp8", "weight_block_size": [64, 64]}})
    assert family(coarse).status == "not-applicable"
    blackwell_q35 = dg_plan(QWEN3_8B, gpu="sm100", spec_change={"text_model_type": "qwen3_5_text"})
    assert "Blackwell" in family(blackwell_q35).summary and not blackwell_q35.items


def test_tp_that_does_not_divide_is_a_one_line_error():
    with pytest.raises(BadInput, match="--tp 3 does not divide num_attention_heads=32"):
        dg_plan(QWEN3_8B, tp=3)


@requires_vllm_stack
def test_gpu_less_build_bundles_the_rest_and_says_deepgemm_was_not_built(tmp_path):
    bundle = tmp_path / "b.tar.zst"
    proc = run_cli("build", str(QWEN3_8B), "--gpu", "sm90", "--engine", "vllm", "--family", "deepgemm",
                   "-o", str(bundle), "--json", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 4, proc.stderr  # documented: bundle written, DeepGEMM part needs a GPU
    assert json.loads(proc.stdout)["summary"]["deepgemm"] == "not-built"
    manifest = json.loads(run_cli("inspect", str(bundle), "--json").stdout)
    assert manifest["deepgemm"]["status"] == "not-built" and "no GPU is visible" in manifest["deepgemm"]["reason"]
    cov = next(c for c in manifest["coverage"] if c["family"] == "deepgemm")
    assert cov["status"] == "not-built" and any("DeepGEMM kernels not in this bundle" in u for u in cov["uncovered"])
    # no Triton kernel, yet vLLM starts Triton's driver on the node (seen on the H200: one cuda_utils C build with
    # a DeepGEMM-only bundle): the bundle ships cuda_utils and install files it under the node's key
    assert manifest["launchers"]["count"] == 1 and manifest["launchers"]["node_keyed_entry"]
    installed = run_cli("install", str(bundle), "--dir", str(tmp_path / "node"), "--json",
                        env={"TRITON_LIBCUDA_PATH": str(tmp_path / "driver")})  # the node's driver folder
    assert installed.returncode == 0, installed.stderr
    assert list((tmp_path / "node").rglob("cuda_utils*.so"))
    # --add of a bundle that has no built DeepGEMM part is refused with the reason
    again = run_cli("build", str(QWEN3_8B), "--gpu", "sm90", "--engine", "vllm", "--family", "deepgemm",
                    "-o", str(tmp_path / "c.tar.zst"), "--add", str(bundle), env={"CUDA_VISIBLE_DEVICES": ""})
    assert again.returncode == 2 and "has no built DeepGEMM part" in again.stderr
    assert not (tmp_path / "c.tar.zst").exists()


def test_identity_mismatch_is_refused(monkeypatch):
    from aotwarm.engines import vllm_deepgemm

    section = {"status": "built", "identity": {"version": "2.8.1", "include_sha256": "a" * 64,
                                                "nvcc": "release 13.0, V13.0.88", "arch": "90a", "num_sms": 132}}
    monkeypatch.setattr(vllm_deepgemm, "library_identity", lambda: {
        "found": True, "version": "2.8.1", "include_sha256": "a" * 64, "nvcc": "release 12.9, V12.9.41"})
    found = deepgemm.identity_mismatches(section, gpu=False)
    assert [m.field for m in found] == ["nvcc release"] and "12.9" in found[0].node
    monkeypatch.setattr(vllm_deepgemm, "library_identity", lambda: {"found": False})
    assert deepgemm.identity_mismatches(section, gpu=False)[0].node == "not importable"
    assert deepgemm.identity_mismatches({"status": "not-built"}, gpu=False) == []


def test_bundle_member_names_for_deepgemm_are_checked():
    from aotwarm.bundle import _check_member_name

    _check_member_name("deep_gemm/cache/sm90_fp8_gemm_1d2d.03685ea630436e7fbaff30ee1944dcd9/kernel.cubin")
    for bad in ("deep_gemm/cache/x.03685ea630436e7fbaff30ee1944dcd9/../../etc/passwd",
                "deep_gemm/cache/sm90.notahash/kernel.cubin", "deep_gemm/tmp/a/kernel.cu"):
        with pytest.raises(BadInput):
            _check_member_name(bad)


def _checkpoint(folder, layers=2, dtype_of=lambda kind: "F8_E4M3", shape_of=None):
    """A model directory: the Qwen3-8B-FP8 config and one safetensors file holding only a header."""
    import shutil
    import struct

    folder.mkdir()
    shutil.copy(QWEN3_8B, folder / "config.json")
    shapes = {"self_attn.q_proj": [4096, 4096], "self_attn.k_proj": [1024, 4096], "self_attn.v_proj": [1024, 4096],
              "self_attn.o_proj": [4096, 4096], "mlp.gate_proj": [12288, 4096], "mlp.up_proj": [12288, 4096],
              "mlp.down_proj": [4096, 12288]}
    header = {}
    for layer in range(layers):
        for kind, shape in shapes.items():
            header[f"model.layers.{layer}.{kind}.weight"] = {
                "dtype": dtype_of(kind), "shape": (shape_of or {}).get(kind, shape), "data_offsets": [0, 0]}
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return folder


def _plan_json(folder, tmp_path):
    out = tmp_path / "plan.json"
    proc = run_cli("plan", str(folder), "--gpu", "sm90", "--engine", "vllm", "--family", "deepgemm", "-o", str(out),
                   "--json")
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@requires_vllm_stack
def test_checkpoint_headers_confirm_the_shapes(tmp_path):
    proc, plan = _plan_json(_checkpoint(tmp_path / "m"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    fam = next(f for f in plan["families"] if f["family"] == "deepgemm")
    assert "shapes checked against safetensors headers" in fam["summary"] and len(plan["items"]) == 4


@requires_vllm_stack
def test_checkpoint_projection_kept_in_bf16_is_not_planned(tmp_path):
    folder = _checkpoint(tmp_path / "m", dtype_of=lambda kind: "BF16" if kind == "self_attn.o_proj" else "F8_E4M3")
    proc, plan = _plan_json(folder, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {(i["params"]["n"], i["params"]["k"]) for i in plan["items"]} == {(6144, 4096), (24576, 4096), (4096, 12288)}
    fam = next(f for f in plan["families"] if f["family"] == "deepgemm")
    assert any("o_proj: stored unquantized in the checkpoint" in u for u in fam["uncovered"])


@requires_vllm_stack
def test_checkpoint_shape_that_disagrees_with_the_config_is_a_one_line_error(tmp_path):
    proc, plan = _plan_json(_checkpoint(tmp_path / "m", shape_of={"self_attn.q_proj": [2048, 4096]}), tmp_path)
    assert proc.returncode == 2 and plan is None
    assert "config and the weights disagree" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@requires_vllm_stack
def test_corrupt_safetensors_header_is_a_one_line_error(tmp_path):
    folder = _checkpoint(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    proc, plan = _plan_json(folder, tmp_path)
    assert proc.returncode == 2 and "corrupt or hostile" in proc.stderr and plan is None


def test_add_takes_the_deepgemm_part_of_a_bundle_built_on_a_gpu_node(tmp_path):
    """--add: a bundle whose plan has the same DeepGEMM shapes and whose DeepGEMM section is built (here
    written directly, with this machine's DeepGEMM identity and one cache entry) lends its part."""
    from aotwarm.build import build
    from aotwarm.bundle import read_bundle, write_bundle
    from aotwarm.engines.vllm_deepgemm import library_identity

    from aotwarm.engines import detect_engine

    vllm = detect_engine("vllm")  # the build checks the plan's engine against the installed one
    plan = dg_plan(QWEN3_8B, engine=vllm)
    here = library_identity()
    assert here["found"]  # vLLM's vendored deep_gemm is installed in the test environment
    entry = "deep_gemm/cache/sm90_fp8_gemm_1d2d.03685ea630436e7fbaff30ee1944dcd9/"
    files = {entry + "kernel.cu": b"// generated", entry + "kernel.cubin": b"\x7fELF", entry + "meta.json": b"{}"}
    section = {"status": "built", "entries": 1, "items": [],
               "identity": {**here, "arch": "90a", "num_sms": plan.target["num_sms"]}}
    donor = tmp_path / "gpu-node.tar.zst"
    write_bundle(donor, {"plan": json.loads(plan.to_json()), "target": plan.target, "deepgemm": section}, files)
    out = tmp_path / "merged.tar.zst"
    from aotwarm.build import BuildOptions

    result = build(plan, out, jobs=1, options=BuildOptions(launchers=False, add_deepgemm=donor))
    assert result.deepgemm["status"] == "built" and result.deepgemm["added_from"] == str(donor)
    got: dict[str, bytes] = {}
    manifest = read_bundle(out, sink=got.__setitem__)
    assert manifest["deepgemm"]["status"] == "built" and {k: v for k, v in got.items() if k.startswith("deep_gemm/")} == files
    cov = next(c for c in manifest["coverage"] if c["family"] == "deepgemm")
    assert cov["status"] == "planned"
    # a donor whose plan lacks one of these shapes is refused
    smaller = dg_plan(QWEN3_8B, tp=2, engine=vllm)
    with pytest.raises(BadInput, match="does not cover DeepGEMM shape"):
        build(smaller, tmp_path / "x.tar.zst", jobs=1, options=BuildOptions(launchers=False, add_deepgemm=donor))


def test_deepgemm_items_run_in_pool_workers_and_fail_per_item_with_the_reason(tmp_path):
    """The sweep runs in pool.py workers (aotwarm.deepgemm_worker); where vLLM's DeepGEMM cannot run (no GPU
    here) every item fails with the reason instead of the pool dying or the build hanging."""
    plan = dg_plan(QWEN3_8B)
    outcomes = deepgemm.run_items(plan.gpu_items[:2], "build", tmp_path / "dg", tmp_path / "logs", 2,
                                  {"num_sms": 132, "max_tokens": 8192}, e8m0=True, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert [o.id for o in outcomes] == [i.id for i in plan.gpu_items[:2]]
    assert all(not o.ok and o.error for o in outcomes), outcomes


def test_deepgemm_entries_install_next_to_triton_and_a_reinstall_never_writes_through_the_old_files(tmp_path):
    """Entries land in DIR/triton/.deep_gemm; a later install builds its generation from hard links to the
    current one, so it must replace files, not write into them: a reader holding the old file keeps its bytes."""
    from aotwarm.build import BuildOptions, build
    from aotwarm.bundle import write_bundle
    from aotwarm.engines import detect_engine
    from aotwarm.engines.vllm_deepgemm import library_identity
    from aotwarm.install import install

    plan = dg_plan(QWEN3_8B, engine=detect_engine("vllm"))
    name = "sm90_fp8_gemm_1d2d.03685ea630436e7fbaff30ee1944dcd9"
    section = {"status": "built", "entries": 1, "items": [],
               "identity": {**library_identity(), "arch": "90a", "num_sms": plan.target["num_sms"]}}

    def bundle_with(cubin: bytes, tag: str):
        donor, out = tmp_path / f"donor-{tag}.tar.zst", tmp_path / f"b-{tag}.tar.zst"
        files = {f"deep_gemm/cache/{name}/kernel.cubin": cubin, f"deep_gemm/cache/{name}/meta.json": b"{}"}
        write_bundle(donor, {"plan": json.loads(plan.to_json()), "target": plan.target, "deepgemm": section}, files)
        build(plan, out, jobs=1, options=BuildOptions(launchers=False, add_deepgemm=donor))
        return out

    dest = tmp_path / "node"
    first = install(bundle_with(b"\x7fELF one", "one"), dest)
    cubin = dest / "triton" / ".deep_gemm" / "cache" / name / "kernel.cubin"
    assert first.env()["DG_JIT_CACHE_DIR"] == str(dest.absolute() / "triton" / ".deep_gemm")
    with open(cubin, "rb") as held:  # a serving process that has the old kernel open
        install(bundle_with(b"\x7fELF two", "two"), dest)
        assert held.read() == b"\x7fELF one"
    assert cubin.read_bytes() == b"\x7fELF two"
