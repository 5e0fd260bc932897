"""The CUDA toolkit a GPU-less FlashInfer build compiles with, and the ``CUDA_HOME`` it is given.

FlashInfer's JIT runs ``$CUDA_HOME/bin/nvcc`` with ``-isystem $CUDA_HOME/include`` and links with
``-L$CUDA_HOME/lib64 -L$CUDA_HOME/lib64/stubs``.  Its modules need the full developer headers (curand for
``sampling``, cuBLASLt and NVRTC for ``fp8_blockscale_gemm_90``) and ``libcuda.so`` to link against.
Container images often carry a minimal toolkit (nvcc and the runtime headers only); vLLM's own wheels
bring the rest from PyPI (``nvidia-curand``, ``nvidia-cublas``, ``nvidia-cuda-nvrtc`` under
``site-packages/nvidia/cu<major>``).

``toolkit_home()`` picks nvcc -- the one whose release equals torch's CUDA runtime (what the node runs)
when there is one, from ``$CUDA_HOME``, ``/usr/local/cuda`` or PyPI's ``nvidia-cuda-nvcc`` -- and
assembles a ``CUDA_HOME`` of symlinks: that nvcc's toolkit, plus headers and libraries it lacks from
the PyPI CUDA packages, plus a ``libcuda.so`` link stub when the toolkit has none.  The result says
which parts came from where (recorded in the manifest).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fsutil import user_cache_dir

# what FlashInfer's nvcc modules include or link beyond the runtime headers
REQUIRED_HEADERS = ("cuda_runtime.h", "curand.h", "cublasLt.h", "nvrtc.h")
LAYOUT = 2  # of the assembled CUDA_HOME (a new layout gets a new folder)


class ToolkitMissing(Exception):
    """No usable nvcc / headers for a GPU-less build (the message says what to install)."""


@dataclass
class Toolkit:
    home: str  # the assembled CUDA_HOME
    nvcc: str
    nvcc_release: str  # "13.0"
    nvcc_from: str  # where nvcc came from
    runtime: str | None  # torch's CUDA runtime (what the node runs)
    added_from_pypi: list[str] = field(default_factory=list)  # required headers taken from PyPI packages
    link_stub: bool = False  # libcuda.so for linking made here (the node's driver provides it at load)

    def to_dict(self) -> dict:
        return asdict(self)


def nvcc_release(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.findall(r"release (\d+\.\d+)", out)
    return found[0] if found else None


def _pypi_cuda_root() -> Path | None:
    """``site-packages/nvidia/cu<major>`` of the PyPI CUDA packages vLLM's wheels bring, if installed."""
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for cand in sorted(Path(base).glob("cu[0-9]*"), reverse=True):
            if (cand / "include").is_dir():
                return cand
    return None


def _candidates() -> list[tuple[str, Path]]:
    """(where, toolkit root) for every nvcc this machine has."""
    out: list[tuple[str, Path]] = []
    for label, root in (("CUDA_HOME", os.environ.get("CUDA_HOME")), ("CUDA_PATH", os.environ.get("CUDA_PATH")),
                        ("/usr/local/cuda", "/usr/local/cuda")):
        if root and (Path(root) / "bin" / "nvcc").exists():
            out.append((f"{label} ({Path(root).resolve()})", Path(root).resolve()))
    pypi = _pypi_cuda_root()
    if pypi is not None and (pypi / "bin" / "nvcc").exists():
        out.append((f"PyPI nvidia-cuda-nvcc ({pypi})", pypi))
    seen, unique = set(), []
    for label, root in out:
        if root not in seen:
            seen.add(root)
            unique.append((label, root))
    return unique


def _torch_cuda() -> str | None:
    try:
        import torch

        return torch.version.cuda
    except ImportError:
        return None


def _link_all(src: Path, dst: Path) -> None:
    """Symlink every entry of ``src`` into ``dst`` that ``dst`` does not have yet."""
    if not src.is_dir():
        return
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if not target.exists() and not target.is_symlink():
            target.symlink_to(entry)


def toolkit_home() -> Toolkit:
    """The CUDA_HOME for FlashInfer's GPU-less builds (assembled once per toolkit under the user cache)."""
    runtime = _torch_cuda()
    found = [(label, root, nvcc_release(str(root / "bin" / "nvcc"))) for label, root in _candidates()]
    found = [f for f in found if f[2]]
    if not found:
        raise ToolkitMissing("no nvcc found (CUDA_HOME, /usr/local/cuda, or PyPI's nvidia-cuda-nvcc): install the "
                             "CUDA toolkit of the node's CUDA runtime to build FlashInfer modules")
    # the release of the node's CUDA runtime first, then the newest
    found.sort(key=lambda f: (f[2] != runtime, [-int(x) for x in f[2].split(".")]))
    label, root, release = found[0]
    pypi = _pypi_cuda_root()
    digest = hashlib.sha256(f"{LAYOUT}\0{root}\0{pypi}\0{release}".encode()).hexdigest()[:16]
    home = user_cache_dir() / "cuda-home" / digest
    added: list[str] = []
    stage = home.with_name(home.name + f".tmp{os.getpid()}")
    if not (home / ".complete").exists():
        shutil.rmtree(stage, ignore_errors=True)
        for sub in ("include", "lib64/stubs"):
            (stage / sub).mkdir(parents=True)
        # nvcc finds its own parts (nvvm, targets/<arch>/include) relative to the bin folder it was called from
        for entry in sorted(root.iterdir()):
            if entry.name not in ("include", "lib", "lib64"):
                (stage / entry.name).symlink_to(entry)
        _link_all(root / "include", stage / "include")
        for lib in ("lib64", "lib"):
            _link_all(root / lib, stage / "lib64")
        _link_all(root / "lib64" / "stubs", stage / "lib64" / "stubs")
        if pypi is not None and pypi != root:
            before = {p.name for p in (stage / "include").iterdir()}
            _link_all(pypi / "include", stage / "include")
            before_libs = {p.name for p in (stage / "lib64").iterdir()}
            _link_all(pypi / "lib", stage / "lib64")
            added = sorted({p.name for p in (stage / "include").iterdir()} - before) + \
                sorted({p.name for p in (stage / "lib64").iterdir()} - before_libs)
        _unversioned_links(stage / "lib64")
        if not (stage / "lib64" / "stubs" / "libcuda.so").exists():
            _link_stub(stage / "lib64" / "stubs" / "libcuda.so")
        (stage / "added-from-pypi.txt").write_text("\n".join(added) + "\n")
        (stage / ".complete").write_text(release + "\n")
        try:
            stage.rename(home)
        except OSError:  # another build assembled it meanwhile
            shutil.rmtree(stage, ignore_errors=True)
    missing = [h for h in REQUIRED_HEADERS if not (home / "include" / h).exists()]
    if missing:
        raise ToolkitMissing(f"the CUDA toolkit at {root} lacks {', '.join(missing)} and no PyPI CUDA package "
                             f"provides it: install the full CUDA toolkit {release} (or pip install nvidia-curand "
                             f"nvidia-cublas nvidia-cuda-nvrtc)")
    added = [ln for ln in (home / "added-from-pypi.txt").read_text().split() if ln in REQUIRED_HEADERS]
    return Toolkit(str(home), str(home / "bin" / "nvcc"), release, label, runtime, added,
                   link_stub=not (home / "lib64" / "stubs" / "libcuda.so").is_symlink())


def _unversioned_links(lib64: Path) -> None:
    """``libfoo.so -> libfoo.so.N`` where only the versioned name exists (PyPI wheels ship those only)."""
    for p in sorted(lib64.iterdir()):
        m = re.match(r"^(lib[\w+-]+\.so)\.\d+$", p.name)
        if m and not (lib64 / m.group(1)).exists():
            (lib64 / m.group(1)).symlink_to(p.name)


def _link_stub(path: Path) -> None:
    """An empty ``libcuda.so`` with the driver's soname: linking records the dependency, the node's driver
    provides the symbols when the module is loaded."""
    from .driverstub import c_compiler

    cc = c_compiler()
    if cc is None:
        raise ToolkitMissing("no C compiler to make the libcuda link stub: install gcc, or a CUDA toolkit with "
                             "lib64/stubs/libcuda.so")
    src = path.with_suffix(".c")
    src.write_text("void aotwarm_libcuda_link_stub(void) {}\n")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(path), str(src)], check=True,
                   capture_output=True)
