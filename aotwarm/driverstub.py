"""A stand-in ``libcuda.so.1`` for machines without an NVIDIA driver (GPU-less builders).

Two things on a builder want the driver library without ever calling into it:

* Triton's host-side C modules link against ``libcuda.so.1`` (``launchers.py``); the node's real
  driver provides the symbols at load time;
* vLLM 0.33's compiled ops (``vllm/_C_stable_libtorch.abi3.so``, ...) list ``libcuda.so.1`` as a
  dependency and bind a few ``cu*`` symbols at load.  With this stub loaded first they import, so
  vLLM's own CUDA platform class and config code run on the builder.  Every stub function returns
  ``CUDA_ERROR_NO_DEVICE``; nothing the builder does calls them (kernels are compiled, never run).

The stub exports exactly the ``cu*`` symbols the given shared objects import (read with ``nm``),
and is cached by that symbol list under ``$XDG_CACHE_HOME/aotwarm``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from .fsutil import user_cache_dir

CUDA_ERROR_NO_DEVICE = 100
SONAME = "libcuda.so.1"


class StubUnavailable(Exception):
    """The stub cannot be built here (no C compiler, no ``nm``); the message says what is missing."""


def c_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")


def driver_symbols(shared_objects: list[Path]) -> list[str]:
    """The ``cu*`` driver functions the given shared objects import."""
    nm = shutil.which("nm")
    if nm is None:
        raise StubUnavailable("'nm' (binutils) is not installed: it is needed to read which driver symbols "
                              "vLLM's compiled ops import")
    names: set[str] = set()
    for so in shared_objects:
        out = subprocess.run([nm, "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            name = line.split()[-1].split("@")[0] if line.strip() else ""
            if name.startswith("cu") and name[2:3].isupper():
                names.add(name)
    return sorted(names)


def build_stub(symbols: list[str], where: Path | None = None) -> Path:
    """Directory holding a ``libcuda.so.1`` that exports ``symbols`` (built once per symbol list)."""
    cc = c_compiler()
    if cc is None:
        raise StubUnavailable("no C compiler (set CC or install gcc) to build a libcuda.so.1 stand-in")
    digest = hashlib.sha256("\n".join(symbols).encode()).hexdigest()[:16]
    folder = (where or user_cache_dir()) / f"libcuda-stub-{digest}"
    lib = folder / SONAME
    if lib.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(f"int {name}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}\n" for name in symbols)
    src = folder / "stub.c"
    src.write_text("/* aotwarm: a driver stand-in for GPU-less builders; every call fails with "
                   "CUDA_ERROR_NO_DEVICE */\n" + body)
    tmp = folder / f".{SONAME}.{os.getpid()}"
    try:
        subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{SONAME}", "-o", str(tmp), str(src)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise StubUnavailable(f"cannot build a {SONAME} stand-in with {cc}: {err}")
    os.replace(tmp, lib)
    return folder


def real_driver_present() -> bool:
    """Whether this process can load the NVIDIA driver library."""
    try:
        ctypes.CDLL(SONAME)
        return True
    except OSError:
        return False


def load_stub_for(shared_objects: list[Path]) -> Path | None:
    """Make ``libcuda.so.1`` resolvable in this process before ``shared_objects`` are imported.

    Returns the stub directory, or None when the real driver is present (nothing to do).
    """
    if real_driver_present():
        return None
    folder = build_stub(driver_symbols(shared_objects))
    # Loaded globally under its soname: later dependencies on libcuda.so.1 resolve to it.
    ctypes.CDLL(str(folder / SONAME), mode=ctypes.RTLD_GLOBAL)
    return folder
