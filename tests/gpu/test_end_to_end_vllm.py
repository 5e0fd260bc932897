"""On a GPU node with vLLM 0.33's kernel sources: build GPU-less (GPU hidden), install elsewhere,
verify -> 0 misses; then vLLM's own GDN kernel functions at >= 30 random prefill token counts and
every decode batch size -> 0 compiles.  Both prefill backends: Triton (everything planned) and the
sm90 default, where the chunk pipeline is FlashInfer's and reported as not covered."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.evidence import evidence, plan_build_install
from tests.gpu.test_end_to_end_gdn import MODEL, aotwarm

pytest.importorskip("vllm")


@pytest.fixture(scope="module", params=["triton", "auto"])
def installed(request, tmp_path_factory):
    backend = request.param
    bundle, plan, dest = plan_build_install(backend, MODEL, ["--gdn-prefill-backend", backend], tmp_path_factory,
                                            build_env={"CUDA_VISIBLE_DEVICES": ""})
    return backend, bundle, plan, dest


def test_verify_zero_misses(installed):
    backend, bundle, _, dest = installed
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json", check=False)
    report = json.loads(proc.stdout)
    evidence(f"verify-{backend}.json", proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["misses"] == [] and report["failed_items"] == [] and report["hits"] > 0
    uncovered = " ".join(u for f in json.loads(aotwarm("inspect", str(bundle), "--json").stdout)["coverage"]
                         for u in f.get("uncovered", []))
    assert ("GDN chunked prefill" in uncovered) == (backend == "auto")


def test_vllm_random_shapes_zero_compiles(installed):
    backend, _, plan, dest = installed
    script = Path(__file__).with_name("vllm_gdn_random_shapes.py")
    proc = subprocess.run([sys.executable, str(script), str(plan), str(dest / "triton"), "2026", "30"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    evidence(f"random-shapes-{backend}.json", out)
    assert out["calls"] >= 30 + 30  # 30 prefill shapes + every decode batch size (35 capture sizes up to 256)
    assert out["compiles"] == 0, out["misses"]
    assert (out["skipped"] > 0) == (backend == "auto")
