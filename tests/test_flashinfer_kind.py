"""The flashinfer family and cache kind: vLLM's call sites name the modules, nvcc builds them without a GPU,
install ships them as FlashInfer AOT artifacts, and FlashInfer's own loader takes them with JIT disabled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aotwarm.kinds import flashinfer as fi_kind
from aotwarm.kinds import kind_of_member

from .vllm_plans import vllm_plan

FIXTURES = Path(__file__).parent / "fixtures"
FP8 = FIXTURES / "Qwen--Qwen3-8B-FP8.json"
QWEN35 = FIXTURES / "Qwen--Qwen3.5-9B.json"


def _needed(so: Path) -> list[str]:
    """DT_NEEDED entries of a shared object (readelf, from binutils beside gcc)."""
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def _modules(plan) -> dict[str, dict]:
    return {i.params["name"]: i.params for i in plan.items if i.family == "flashinfer" and i.op == "flashinfer.module"}


def test_member_rule_accepts_modules_and_nothing_else():
    assert kind_of_member("flashinfer/sampling/sampling.so") is fi_kind
    assert kind_of_member("flashinfer/trtllm_dg/gemm_swapAB_24576_4096_128_16_128_1_81_8_1_Normal/nvcc_kernel.cubin") \
        is fi_kind
    for bad in ("flashinfer/trtllm_dg/gemm_swapAB_1_Normal/nvcc_kernel.cubin",
                "flashinfer/trtllm_dg/gemm_swapAB_24576_4096_128_16_128_1_81_8_1_Normal/kernel.cu","flashinfer/sampling/other.so", "flashinfer/../sampling.so", "flashinfer/sampling/sampling.so.1",
                "flashinfer/Sampling/Sampling.so", "flashinfer/sampling.so"):
        assert kind_of_member(bad) is None, bad


def test_vllm_call_sites_name_the_modules_fp8_dense_h200():
    """FP8 block linears on sm90 go to FlashInfer below M=32 (vLLM's kernel choice), the sampler to FlashInfer:
    both modules, each with the FlashInfer generator that gives it."""
    plan = vllm_plan(FP8, families=("flashinfer",))
    mods = _modules(plan)
    assert mods == {"sampling": {"name": "sampling", "generator": "flashinfer.jit.sampling:gen_sampling_module"},
                    "fp8_blockscale_gemm_90": {
                        "name": "fp8_blockscale_gemm_90",
                        "generator": "flashinfer.jit.gemm.fp8_blockscale:gen_fp8_blockscale_gemm_sm90_module"}}
    assert all(i.kind == "flashinfer" for i in plan.items) and not plan.triton_items
    # fp8_blockscale_gemm_90 compiles TRT-LLM DeepGEMM cubins at run time: one GPU item per FP8 linear shape
    nested = {(i.params["n"], i.params["k"]): i for i in plan.items if i.op == "flashinfer.trtllm_dg_swapab"}
    assert set(nested) == {(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)}
    assert all(i.needs_gpu and (i.params["m_first"], i.params["m_last"]) == (1, 31) for i in nested.values())
    cov = next(f for f in plan.families if f.family == "flashinfer")
    assert cov.status == "planned" and "4 shape(s) of TRT-LLM DeepGEMM cubins" in cov.summary
    sampling = plan.serving["vllm"]["flashinfer"]["sampler"]
    assert sampling["flashinfer"] and sampling["modules"]["sampling"]["requests"] == ["top-k", "top-p", "top-k+top-p"]


def test_sampler_only_on_blackwell_and_stated_when_off(monkeypatch):
    """b200: vLLM's FP8 block kernel is not FlashInfer's (sm90 only) -> sampling alone; with
    VLLM_USE_FLASHINFER_SAMPLER=0 vLLM's sampler decision says no -> no module, nothing to build."""
    assert set(_modules(vllm_plan(FP8, gpu="b200", families=("flashinfer",)))) == {"sampling"}
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "0")
    from .vllm_plans import decisions

    decisions.cache_clear()
    try:
        plan = vllm_plan(QWEN35, families=("flashinfer",))
    finally:
        decisions.cache_clear()
    assert _modules(plan) == {}
    cov = next(f for f in plan.families if f.family == "flashinfer")
    assert cov.status == "not-covered" and any("CuTe DSL" in u for u in cov.uncovered)  # the GDN prefill


def test_engine_env_extends_search_paths_and_replaces_the_rest():
    """An install's PYTHONPATH (FlashInfer's provider) goes in front of the node's own, never replaces it."""
    from aotwarm.kinds import merge_env

    base = {"PYTHONPATH": "/node/site", "TRITON_CACHE_DIR": "/old", "HOME": "/root"}
    out = merge_env(base, {"PYTHONPATH": "/opt/k/triton/.flashinfer/python", "TRITON_CACHE_DIR": "/opt/k/triton"})
    assert out == {"PYTHONPATH": "/opt/k/triton/.flashinfer/python:/node/site", "TRITON_CACHE_DIR": "/opt/k/triton",
                   "HOME": "/root"}
    assert merge_env({}, {"PYTHONPATH": "/p"})["PYTHONPATH"] == "/p"


def test_identity_mismatches(monkeypatch):
    manifest = {"flashinfer": {"status": "built", "identity": {"flashinfer_version": "0.0.1", "tvm_ffi_version": "x",
                                                               "cuda_runtime": "12.9"}}}
    fields = {m.field for m in fi_kind.mismatches(manifest, gpu=None)}
    assert fields == {"FlashInfer version", "tvm-ffi version", "CUDA runtime major"}
    assert fi_kind.mismatches({"flashinfer": {"status": "not-built"}}, gpu=None) == []


@pytest.mark.slow
def test_gpu_less_build_install_elsewhere_and_load_with_jit_disabled(tmp_path, monkeypatch):
    """`sampling` and `fp8_blockscale_gemm_90` for sm90 with nvcc and no GPU; installed into another directory;
    FlashInfer's own loader takes both from the install with FLASHINFER_DISABLE_JIT=1 -- and refuses (would
    compile) once the provider is gone, so the check can fail."""
    from aotwarm.build import build
    from aotwarm.cuda_toolkit import ToolkitMissing, toolkit_home
    from aotwarm.install import cache_dir, install

    try:
        toolkit_home()
    except ToolkitMissing as err:  # a machine without any CUDA toolkit: nothing to compile with
        pytest.skip(str(err))
    plan = vllm_plan(FP8, families=("flashinfer",))
    bundle = tmp_path / "fi.tar.zst"
    result = build(plan, bundle, jobs=2, work_dir=tmp_path / "work")
    section = result.manifest["flashinfer"]
    assert section["status"] == "built", section.get("reason")
    # the TRT-LLM DeepGEMM cubins need a GPU of the target kind: not built here, said so, the build is partial
    assert section["trtllm_dg"]["status"] == "not-built" and "no GPU is visible" in section["trtllm_dg"]["reason"]
    assert result.not_built == ["flashinfer"]
    cov = next(c for c in result.manifest["coverage"] if c["family"] == "flashinfer")
    assert cov["status"] == "not-built" and any("TRT-LLM DeepGEMM cubins" in u for u in cov["uncovered"])
    assert section["identity"]["cuda_architectures"] == ["sm90a"] and section["identity"]["cuda_arch_list"] == "9.0"
    assert section["toolkit"]["nvcc_release"] == section["toolkit"]["runtime"]  # the node's CUDA runtime
    members = sorted(f["path"] for f in result.manifest["files"] if f["path"].startswith("flashinfer/"))
    assert members == ["flashinfer/fp8_blockscale_gemm_90/fp8_blockscale_gemm_90.so", "flashinfer/sampling/sampling.so"]
    # the driver dependency survives a link against the builder's empty stub (the node resolves cu* through it)
    built_fp8 = next((tmp_path / "work").rglob("fp8_blockscale_gemm_90.so"), None) or next(
        fi_kind.workspace().rglob("fp8_blockscale_gemm_90/fp8_blockscale_gemm_90.so"))
    assert "libcuda.so.1" in _needed(built_fp8)

    # the same plan again: ninja has nothing to do, the bundle is byte-identical
    again = tmp_path / "again.tar.zst"
    build(plan, again, jobs=2, work_dir=tmp_path / "work2")
    assert again.read_bytes() == bundle.read_bytes()
    # what a GPU node does with it: `build --add` takes the modules from this bundle (the cubins it would add there)
    from aotwarm.build import BuildOptions

    added = build(plan, tmp_path / "added.tar.zst", jobs=2, work_dir=tmp_path / "work3",
                  options=BuildOptions(add_deepgemm=bundle))
    assert added.manifest["flashinfer"]["modules_added_from"] == str(bundle)
    assert {f["path"]: f["sha256"] for f in added.manifest["files"] if f["path"].startswith("flashinfer/")} == \
        {f["path"]: f["sha256"] for f in result.manifest["files"] if f["path"].startswith("flashinfer/")}

    dest = tmp_path / "node" / "dir"
    installed = install(bundle, dest)
    # this GPU-less "node" stands for an H200: FlashInfer reads its arch from the GPU, here from its variable
    monkeypatch.setenv("FLASHINFER_CUDA_ARCH_LIST", "9.0")
    assert installed.env()["PYTHONPATH"] == str(cache_dir(dest) / ".flashinfer" / "python")
    report = fi_kind.verify_section(plan, result.manifest, cache_dir(dest), timeout=600)
    assert report["failed"] == [] and sorted(report["loaded"]) == ["fp8_blockscale_gemm_90", "sampling"], report
    assert fi_kind.verify_failures(report) == []

    # the inspect output names the part
    proc = subprocess.run([sys.executable, "-m", "aotwarm", "inspect", str(bundle), "--json"], capture_output=True,
                          text=True)
    assert json.loads(proc.stdout)["flashinfer"]["status"] == "built"

    shutil.rmtree(cache_dir(dest) / ".flashinfer" / "python")
    broken = fi_kind.verify_section(plan, result.manifest, cache_dir(dest), timeout=600)
    assert len(broken["failed"]) == 2 and all("MissingJITCacheError" in f for f in broken["failed"]), broken
    assert fi_kind.verify_failures(broken)
