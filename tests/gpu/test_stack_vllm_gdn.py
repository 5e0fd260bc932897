"""On the GPU machine: vLLM GDN plans made on the serving stack (vLLM's own config resolution, see
tests/independent/record_scenarios.py), built here GPU-less (GPU hidden), installed elsewhere, verified,
then the kernel launches vLLM's own layer made for those plans replayed against the installed bundle.

Set AOTWARM_SCENARIO_DIR to the folder record_scenarios wrote (it needs vLLM's full stack, which this
machine does not have: its plans and launches travel with the run).  The replay uses vLLM's kernel
modules only; the expectation is what vLLM's layer launched, not what aotwarm planned.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.evidence import evidence, keep_file
from tests.gpu.test_end_to_end_gdn import aotwarm

ROOT = Path(__file__).parents[2]
SCENARIOS = Path(os.environ.get("AOTWARM_SCENARIO_DIR", "/nonexistent"))
NAMES = sorted(p.name.removesuffix(".plan.json") for p in SCENARIOS.glob("*.plan.json"))

pytestmark = pytest.mark.skipif(not NAMES, reason="AOTWARM_SCENARIO_DIR holds no recorded scenarios")


@pytest.fixture(scope="module", params=NAMES)
def installed(request, tmp_path_factory):
    name = request.param
    build = tmp_path_factory.mktemp(f"builder-{name}")
    bundle = build / "bundle.tar.zst"
    built = aotwarm("build", "--plan", str(SCENARIOS / f"{name}.plan.json"), "-o", str(bundle), "--json",
                    env={"CUDA_VISIBLE_DEVICES": ""})
    evidence(f"build-{name}.json", built.stdout)
    keep_file(bundle, f"bundle-{name}.tar.zst")
    dest = tmp_path_factory.mktemp("node") / "elsewhere"
    aotwarm("install", str(bundle), "--dir", str(dest))
    return name, bundle, dest


def test_verify_zero_misses(installed):
    name, bundle, dest = installed
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json", check=False)
    report = json.loads(proc.stdout)
    evidence(f"verify-{name}.json", proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["misses"] == [] and report["failed_items"] == [] and report["hits"] > 0
    assert report["c_builds"] == 0


def test_vllm_layer_launches_replay_zero_compiles(installed):
    name, _, dest = installed
    recorded = SCENARIOS / f"{name}.launches.json"
    proc = subprocess.run([sys.executable, "-m", "tests.independent.replay_gpu", str(recorded), str(dest / "triton")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "CC": "/bin/false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    evidence(f"replay-{name}.json", out)
    assert out["replayed"] >= 1 and out["compiles"] == 0, out
