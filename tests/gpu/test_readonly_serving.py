"""Serving-side safety on a GPU node: a read-only installed cache and no C compiler; the engine runs
the planned shapes with zero compiles and zero writes."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.test_zero_work import full_bundle  # noqa: F401  (module fixture)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def readonly_dest(full_bundle):  # noqa: F811
    """The installed directory itself, re-mounted read-only (group files point at this path)."""
    _, _, dest = full_bundle
    ok = subprocess.run(["mount", "--bind", str(dest), str(dest)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(dest)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(dest)], capture_output=True)
        ok = False
    if not ok:
        pytest.skip("cannot make a read-only bind mount here")
    yield dest
    subprocess.run(["umount", str(dest)], capture_output=True)


def test_readonly_cache_no_compiler_zero_writes(readonly_dest):
    dest = readonly_dest
    with pytest.raises(OSError):
        (dest / "triton" / "probe").write_text("x")
    before = snapshot(dest)
    script = Path(__file__).with_name("fla_random_shapes.py")
    proc = subprocess.run([sys.executable, str(script), str(dest / "triton"), "7", "20", "4096", "256",
                           "32", "128", "128"], capture_output=True, text=True, env={**os.environ, "CC": "/bin/false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compiles"] == 0 and len(out["calls"]) >= 20
    assert snapshot(dest) == before
