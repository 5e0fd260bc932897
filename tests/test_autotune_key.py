"""The autotune results file is written under the key Triton's own autotuner computes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from aotwarm.device import VirtualDevice
    from aotwarm.targets import resolve_target
    vd = VirtualDevice(resolve_target("sm90").target).install()
    import torch, triton
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner

    @triton.autotune(configs=[triton.Config({"B": b}, num_warps=w) for b in (64, 128) for w in (2, 4)], key=["n"])
    @triton.jit
    def scale(x, y, n, B: tl.constexpr):
        i = tl.program_id(0) * B + tl.arange(0, B)
        tl.store(y + i, tl.load(x + i, mask=i < n) * 2, mask=i < n)

    x, y = torch.zeros(3000, dtype=torch.float16), torch.zeros(3000, dtype=torch.float16)
    scale[(1,)](x, y, 3000)
    rec = vd.autotune_records[0]
    # Triton's own code path: check_disk_cache computes the key and, after 'benchmarking', writes the file there
    tuner = scale
    tuner.nargs = {"x": x, "y": y, "n": 3000}
    key = (3000, "torch.float16", "torch.float16")
    def bench():
        tuner.configs_timings = {c: [float(i + 1)] for i, c in enumerate(tuner.configs)}
    Autotuner.check_disk_cache(tuner, key, tuner.configs, bench)
    written = [str(p.relative_to(os.environ["TRITON_CACHE_DIR"])) for p in
               __import__("pathlib").Path(os.environ["TRITON_CACHE_DIR"]).rglob("*.autotune.json")]
    print(json.dumps({"ours": f"{rec.disk_key}/{rec.file_name}", "triton": written, "key": rec.key,
                      "configs": len(rec.config_dicts)}))
""")


def test_disk_key_matches_tritons(tmp_path):
    script = tmp_path / "k.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["triton"] == [out["ours"]] and out["key"] == [3000, "torch.float16", "torch.float16"]
    assert out["configs"] == 4
