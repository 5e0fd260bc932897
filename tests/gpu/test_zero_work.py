"""On a GPU node: tune on the GPU, rebuild GPU-less with --tuning-from, install, and verify zero work:
no compile, no autotune benchmark, no C compiler (CC points at a failing program)."""

import json
from pathlib import Path

import pytest

from tests.gpu.test_end_to_end_gdn import MODEL, aotwarm

SERVING = ["--gpu", "sm90", "--engine", "fla", "--max-num-batched-tokens", "4096"]


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory):
    pytest.importorskip("fla")
    d = tmp_path_factory.mktemp("zero-work")
    tuned, full = d / "tuned.tar.zst", d / "full.tar.zst"
    aotwarm("build", MODEL, *SERVING, "--tune", "-o", str(tuned), "--json")
    out = json.loads(aotwarm("build", MODEL, *SERVING, "--tuning-from", str(tuned), "-o", str(full), "--json",
                             env={"CUDA_VISIBLE_DEVICES": ""}).stdout)
    assert out["summary"]["autotune_left_to_node"] == 0 and out["summary"]["launchers"] > 0
    dest = d / "node" / "dir"
    aotwarm("install", str(full), "--dir", str(dest))
    return tuned, full, dest


def test_tuned_results_are_measured_then_reused(full_bundle):
    tuned, full, _ = full_bundle
    t = json.loads(aotwarm("inspect", str(tuned), "--json").stdout)["autotune"]
    f = json.loads(aotwarm("inspect", str(full), "--json").stdout)["autotune"]
    assert t["counts"]["measured"] == len(t["results"]) > 0 and t["counts"]["node"] == 0
    assert f["counts"]["reused"] == len(f["results"]) == len(t["results"])
    assert all(r["source"]["gpu"] == "NVIDIA H100 80GB HBM3" for r in f["results"])


def test_verify_zero_compiles_benchmarks_and_c_builds(full_bundle):
    _, full, dest = full_bundle
    proc = aotwarm("verify", str(full), "--dir", str(dest), "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["misses"] == [] and report["benchmarks"] == 0 and report["c_builds"] == 0
    assert report["expect_no_benchmarks"] and report["expect_no_c_builds"]
