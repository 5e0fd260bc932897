"""VirtualDevice: engine code sees the target GPU, launches become compiles (in a child process)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("fla")

SCRIPT = textwrap.dedent("""
    import json, sys, os, tempfile
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()
    from aotwarm.device import VirtualDevice
    from aotwarm.targets import resolve_target
    vd = VirtualDevice(resolve_target(sys.argv[1]).target).install()
    import torch, triton
    import fla.utils as fu
    out = {
        "available": torch.cuda.is_available(), "name": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability()),
        "sms": torch.cuda.get_device_properties(0).multi_processor_count,
        "triton_arch": triton.runtime.driver.active.get_current_target().arch,
        "triton_sms": triton.runtime.driver.active.utils.get_device_properties(0)["multiprocessor_count"],
        "fla_hopper": fu.IS_NVIDIA_HOPPER, "fla_blackwell": fu.IS_NVIDIA_BLACKWELL,
        "fla_smem_hopper": fu.check_shared_mem("hopper"), "fla_smem_ampere": fu.check_shared_mem("ampere"),
    }
    import triton.language as tl
    @triton.autotune(configs=[triton.Config({"B": 64}, num_warps=w) for w in (1, 2)], key=["n"])
    @triton.jit
    def add(x, y, n, B: tl.constexpr):
        i = tl.program_id(0) * B + tl.arange(0, B)
        tl.store(y + i, tl.load(x + i, mask=i < n), mask=i < n)
    seen = []
    triton.knobs.compilation.listener = lambda **kw: seen.append(kw["metadata"]["target"].arch)
    x = torch.zeros(100); y = torch.zeros(100)
    add[(2,)](x, y, 100)   # a launch: compiles both configs, runs nothing
    out["compiled"] = seen
    out["autotune"] = [r.__dict__ for r in vd.autotune_records]
    vd.uninstall()
    out["restored"] = torch.cuda.is_available()
    print(json.dumps(out))
""")


def probe(target: str, tmp_path) -> dict:
    script = tmp_path / f"probe_{target}.py"  # @triton.jit needs its source in a file
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), target], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sm90_answers_as_h100_and_launch_compiles_every_config(tmp_path):
    out = probe("sm90", tmp_path)
    assert out["available"] and out["name"] == "NVIDIA H100 80GB HBM3" and out["capability"] == [9, 0]
    assert out["sms"] == out["triton_sms"] == 132 and out["triton_arch"] == 90
    assert out["fla_hopper"] and not out["fla_blackwell"] and out["fla_smem_hopper"]
    assert out["compiled"] == [90, 90]
    assert out["autotune"][0]["kernel"] == "add" and out["autotune"][0]["key"] == [100, "torch.float32", "torch.float32"]
    assert len(out["autotune"][0]["configs"]) == 2
    assert out["restored"] is False  # uninstall puts torch.cuda back (no GPU here)


def test_sm80_and_sm89_differ_as_engine_code_expects(tmp_path):
    a100, l40s = probe("a100", tmp_path), probe("l40s", tmp_path)
    assert not a100["fla_hopper"] and a100["fla_smem_ampere"] and a100["compiled"] == [80, 80]
    assert not l40s["fla_smem_ampere"] and l40s["triton_arch"] == 89


def test_sm100_is_blackwell_for_fla(tmp_path):
    assert probe("b200", tmp_path)["fla_blackwell"]
