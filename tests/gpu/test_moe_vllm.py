"""On a GPU node: the WNA16 MoE + shared-expert gate bundle (Qwen1.5-MoE-A2.7B GPTQ-Int4, --moe-backend
triton) built GPU-less, installed elsewhere, verified; then vLLM's own WNA16 entry point at >= 40
random M in [1, max_num_batched_tokens] and the gate kernel of tests/ -> 0 compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.evidence import evidence, plan_build_install
from tests.gpu.test_end_to_end_gdn import aotwarm

pytest.importorskip("vllm")
ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "aotwarm" / "configs" / "Qwen--Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4.json")
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "vllm_shims"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "AOTWARM_SHARED_EXPERT_GATE_MODULE": "tests.shared_expert_gate_kernel"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return plan_build_install("moe", MODEL, ["--moe-backend", "triton"], tmp_path_factory,
                              build_env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, node_env=ENV)


def test_verify_zero_misses(installed):
    bundle, _, dest = installed
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json", env=ENV, check=False)
    report = json.loads(proc.stdout)
    evidence("verify-moe.json", proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["misses"] == [] and report["failed_items"] == []


def test_random_m_zero_compiles(installed):
    _, plan, dest = installed
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("moe_random_m.py")), str(plan),
                           str(dest / "triton"), "2026", "40"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    evidence("random-m-moe.json", out)
    assert len(out["ms"]) >= 40 and out["compiles"] == 0, out["misses"]
