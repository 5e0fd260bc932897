"""On a GPU node: build GPU-less (GPU hidden), install elsewhere, verify → 0 misses; then fla's own
entry points at random in-range shapes against the installed cache → 0 compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = str(Path(__file__).parents[1] / "fixtures" / "Qwen--Qwen3.5-9B.json")


def aotwarm(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "aotwarm", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"aotwarm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("fla")
    build_dir = tmp_path_factory.mktemp("builder")
    bundle = build_dir / "qwen35-9b.h100.tar.zst"
    aotwarm("build", MODEL, "--gpu", "sm90", "--engine", "fla", "-o", str(bundle), "--json",
            env={"CUDA_VISIBLE_DEVICES": ""})
    dest = tmp_path_factory.mktemp("node") / "some" / "other" / "dir"
    aotwarm("install", str(bundle), "--dir", str(dest))
    return bundle, dest


def test_verify_zero_misses(installed):
    bundle, dest = installed
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["misses"] == [] and report["failed_items"] == [] and report["hits"] > 0


def test_fla_random_shapes_zero_compiles(installed):
    _, dest = installed
    script = Path(__file__).with_name("fla_random_shapes.py")
    proc = subprocess.run([sys.executable, str(script), str(dest / "triton"), "2026", "24", "8192", "256",
                           "32", "128", "128"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len([c for c in out["calls"] if "tokens" in c]) >= 20
    assert out["compiles"] == 0, out["misses"]
