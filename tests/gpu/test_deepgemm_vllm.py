"""On a GPU node: DeepGEMM bundles for Qwen3-8B-FP8 (dense FP8 linears) and the MoE experts of
Qwen3-30B-A3B-FP8 (--moe-backend deep_gemm) built here, installed elsewhere, verified (nvcc replaced
by a sentinel: 0 new kernels, 0 compiler runs); then >= 40 random M per shape through vLLM's DeepGEMM
wrappers against the installed cache -> 0 new kernels."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.evidence import evidence, plan_build_install
from tests.gpu.test_end_to_end_gdn import aotwarm

pytest.importorskip("vllm")
CONFIGS = Path(__file__).parents[2] / "aotwarm" / "configs"
CASES = {"qwen3-8b-fp8": ("Qwen--Qwen3-8B-FP8.json", []),
         "qwen3-30b-a3b-fp8": ("Qwen--Qwen3-30B-A3B-FP8.json", ["--moe-backend", "deep_gemm"])}


@pytest.fixture(scope="module", params=sorted(CASES))
def installed(request, tmp_path_factory):
    name = request.param
    config, extra = CASES[name]
    bundle, plan, dest = plan_build_install(name, str(CONFIGS / config), ["--family", "deepgemm", *extra],
                                            tmp_path_factory, build_args=("-j", "8"))  # the GPU stays visible
    evidence(f"manifest-deepgemm-{name}.json", json.loads(aotwarm("inspect", str(bundle), "--json").stdout)["deepgemm"])
    return name, bundle, plan, dest


def test_verify_zero_new_kernels(installed):
    name, bundle, _, dest = installed
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json", check=False)
    report = json.loads(proc.stdout)
    evidence(f"verify-{name}.json", proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dg = report["deepgemm"]
    assert dg["items"] > 0 and dg["cached_kernels"] > 0
    assert dg["new_kernels"] == 0 and dg["compile_attempts"] == 0 and dg["failed_items"] == []


def test_random_m_zero_new_kernels(installed):
    name, _, plan, dest = installed
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("deepgemm_random_m.py")), str(plan),
                           str(dest / "triton" / ".deep_gemm"), "2026", "40"], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    evidence(f"random-m-{name}.json", out)
    assert out["per_item"] and all(len(ms) >= 40 for ms in out["per_item"].values())
    assert out["new_kernels"] == 0 and out["compiler_runs"] == 0
