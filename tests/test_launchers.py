"""Prebuilt launchers: same cache key as the node computes, libcuda.so.1 kept as a dependency, reproducible.

Triton 3.6 keys cuda_utils by its C source and platform only; Triton 3.8 also by the Triton install and
driver folders of the machine, so install files it under the key Triton computes on the node."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from aotwarm.launchers import LauncherBuilder, compiler_wrapper, libcuda_dir
    wd = Path(sys.argv[1])
    stub = libcuda_dir() or ""
    os.environ["CC"] = compiler_wrapper(wd)
    os.environ["TRITON_LIBCUDA_PATH"] = stub
    print(LauncherBuilder.create().cuda_utils())
    from aotwarm.launchers import cuda_utils_node_keyed, node_cuda_utils_entry
    print(node_cuda_utils_entry()[0] if cuda_utils_node_keyed() else "")
""")


def build_cuda_utils(work: Path) -> Path:
    env = {**os.environ, "TRITON_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("TRITON_LIBCUDA_PATH", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(work)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry, node_entry = proc.stdout.splitlines()[-2:]
    (so,) = (work / "cache" / entry).glob("cuda_utils*.so")
    return so, node_entry


@pytest.mark.skipif(not Path("/sbin/ldconfig").exists(), reason="needs ldconfig")
def test_cuda_utils_is_reproducible_and_needs_libcuda(tmp_path):
    (a, node_a), (b, _) = build_cuda_utils(tmp_path / "a"), build_cuda_utils(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    from aotwarm.launchers import cuda_utils_node_keyed

    if cuda_utils_node_keyed():
        # Triton >= 3.8: the entry is Triton's key for this machine's paths (here: the stand-in's folder, one
        # per machine), and it is what install computes for a node with the same folders
        assert a.parent.name == node_a == b.parent.name
    else:
        # Triton 3.6: sha256(driver.c + platform) -> base32, no path in it
        from triton.backends.nvidia import driver
        from triton.runtime.build import platform_key
        import hashlib, base64

        src = Path(driver.dirname, "driver.c").read_text()
        key = base64.b32encode(hashlib.sha256((src + platform_key()).encode()).digest()).decode().rstrip("=")
        assert a.parent.name == key
    dynamic = subprocess.run(["readelf", "-d", str(a)], capture_output=True, text=True).stdout
    assert "[libcuda.so.1]" in dynamic
    assert b"/tmp" not in a.read_bytes()
