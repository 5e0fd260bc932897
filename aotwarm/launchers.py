"""Host-side launchers, prebuilt on the builder so a serving node needs no C compiler.

Triton 3.6 compiles two kinds of C extension on first use, with the node's C compiler:
``cuda_utils`` (once) and ``__triton_launcher`` (one per kernel *signature*; kernels with the same
signature share it). Both are cached under ``sha256(C source + platform)``, a key with no path in
it, and looked up by file name, so a prebuilt copy in the bundle is found on the node.

Triton 3.8 has no per-kernel launcher (one generic ``launch`` in ``cuda_utils``), so only
``cuda_utils`` is compiled, once per process at driver start-up — but its cache key
(``runtime/build.py: _get_cache_manager``) hashes the C source *and* the build's library and include
directories: the node's absolute ``triton/backends/nvidia`` path and its ``libcuda.so.1`` folders
(``TRITON_LIBCUDA_PATH``, else ``ldconfig -p``).  The ``.so`` itself holds no path, so the builder's
copy is shipped once and ``install`` files it under the key Triton computes *on the node*
(``node_cuda_utils_entry``); where the node's driver folder cannot be found (an image build without
the driver mounted and no ``TRITON_LIBCUDA_PATH``) install says so and the node compiles it.

Building needs a C compiler, the Python headers of the serving ABI (the builder runs the same
Python), and a ``libcuda.so.1`` to link against. Without a GPU driver an empty stub library is
enough: the launcher only records ``libcuda.so.1`` as a dependency and the node's driver provides
the symbols at load time.

The compiler is called through a small wrapper (``compiler_wrapper``) that (1) links with
``--no-as-needed``, so the dependency on ``libcuda.so.1`` is kept even against the empty stub
(otherwise the node's loader would find the driver's symbols missing and Triton would rebuild the
launcher with a compiler), and (2) compiles the C file by its base name from its own directory,
so Triton's random temporary path does not end up in the binary and builds are byte-identical.
The C source, and so Triton's cache key, is exactly what the node would generate.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .driverstub import c_compiler


def per_kernel_launchers() -> bool:
    """Triton 3.6 compiles one C launcher per kernel signature; 3.7+ launches through ``cuda_utils``."""
    from triton.backends.nvidia import driver as nvidia_driver

    return hasattr(nvidia_driver, "make_launcher")


def cuda_utils_node_keyed() -> bool:
    """Whether ``cuda_utils``'s cache key holds the node's paths (Triton >= 3.8), so install re-keys it."""
    from triton.runtime import build as triton_build

    return hasattr(triton_build, "_get_cache_manager")


def node_cuda_utils_entry() -> tuple[str | None, str]:
    """(cache entry, how it was found) under which Triton on *this* node looks for ``cuda_utils``.

    Computed with Triton's own key function, for this node's Triton path and driver folders; None
    (with the reason) when the node's ``libcuda.so.1`` cannot be located."""
    import tempfile

    from triton.backends.nvidia import driver as nvidia_driver
    from triton.runtime import build as triton_build

    try:  # not Triton's process-wide cache of it: this machine's folders now
        libcuda = getattr(nvidia_driver.libcuda_dirs, "__wrapped__", nvidia_driver.libcuda_dirs)()
    except Exception as err:  # Triton asserts when neither TRITON_LIBCUDA_PATH nor ldconfig knows the driver
        return None, (f"this machine's libcuda.so.1 folder is unknown ({str(err).splitlines()[0]}): install on "
                      f"the GPU node, or set TRITON_LIBCUDA_PATH to the driver's folder here and when serving")
    config = {"language": ["c"], "library_dirs": [nvidia_driver.libdevice_dir, *libcuda],
              "include_dirs": nvidia_driver.include_dirs, "libraries": nvidia_driver.libraries, "ccflags": None}
    src = Path(nvidia_driver.dirname, "driver.c").read_bytes()
    saved = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="aotwarm-key-") as tmp:
        os.environ["TRITON_CACHE_DIR"] = tmp  # Triton's key function creates the entry folder: not in a real cache
        try:
            entry = Path(triton_build._get_cache_manager(src, config).cache_dir).name
        finally:
            if saved is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = saved
    return entry, f"keyed for Triton at {nvidia_driver.dirname} and libcuda in {':'.join(libcuda)}"


class LaunchersUnavailable(Exception):
    """The builder lacks what prebuilding launchers needs; the message says what."""


def builder_problem() -> str | None:
    """Why launchers cannot be built here, or None."""
    cc = c_compiler()
    if not cc:
        return "no C compiler on the builder (set CC or install gcc)"
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return f"no Python headers for this interpreter ({include}/Python.h missing: install python3-dev)"
    return None


def _ldconfig_has_libcuda() -> bool:
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libcuda.so.1" in out


def libcuda_dir() -> str | None:
    """A directory holding a ``libcuda.so.1`` to link against (None: Triton finds the driver's own).

    On a GPU-less builder it is ``driverstub``'s stand-in, in the user's cache folder."""
    if os.environ.get("TRITON_LIBCUDA_PATH"):
        return os.environ["TRITON_LIBCUDA_PATH"]
    if _ldconfig_has_libcuda():
        return None
    from .driverstub import StubUnavailable, build_stub

    try:  # one stand-in per machine: Triton 3.8 keys cuda_utils by its folder, so builds stay byte-identical
        return str(build_stub([]))
    except StubUnavailable as err:
        raise LaunchersUnavailable(str(err))


def compiler_wrapper(work_dir: Path) -> str:
    """Write the reproducible compiler wrapper (see the module docstring); returns its path."""
    cc = c_compiler()
    wrapper = work_dir / "aotwarm-cc"
    text = ("#!/bin/sh\n"
            "# aotwarm: build Triton launchers reproducibly, keeping libcuda.so.1 as a dependency\n"
            'src="$1"; shift\n'
            f'cd "$(dirname "$src")" && exec {cc} -Wl,--no-as-needed "$(basename "$src")" "$@"\n')
    work_dir.mkdir(parents=True, exist_ok=True)
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    return str(wrapper)


@dataclass
class LauncherBuilder:
    """Builds (and caches into TRITON_CACHE_DIR) the launcher of every kernel it is shown."""

    built: dict[str, str]  # launcher source sha256 -> cache entry name

    @classmethod
    def create(cls) -> "LauncherBuilder":
        return cls({})

    @staticmethod
    def _entry(src: str) -> str:
        from triton.runtime.build import platform_key
        from triton.runtime.cache import _base32

        return _base32(hashlib.sha256((src + platform_key()).encode("utf-8")).hexdigest())

    def _compile(self, src: str, name: str) -> str:
        from triton.backends.nvidia import driver as nvidia_driver
        from triton.runtime.build import compile_module_from_src

        from triton.runtime.build import platform_key
        from triton.runtime.cache import get_cache_manager

        digest = hashlib.sha256(src.encode()).hexdigest()
        if digest in self.built:
            return self.built[digest]
        key = hashlib.sha256((src + platform_key()).encode("utf-8")).hexdigest()
        if get_cache_manager(key).get_file(f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}") is not None:
            self.built[digest] = self._entry(src)  # already built (a resumed build, or another worker)
            return self.built[digest]
        try:
            compile_module_from_src(src=src, name=name, library_dirs=nvidia_driver.library_dirs(),
                                    include_dirs=nvidia_driver.include_dirs, libraries=nvidia_driver.libraries)
        except (ImportError, RuntimeError, OSError) as err:
            # Loading a launcher linked against the stub fails (no driver symbols); it is cached already.
            if "undefined symbol" not in str(err) and "libcuda" not in str(err):
                raise
        self.built[digest] = self._entry(src)
        return self.built[digest]

    def cuda_utils(self) -> str:
        from triton.backends.nvidia import driver as nvidia_driver

        if not per_kernel_launchers():
            return self._cuda_utils_node_keyed()
        return self._compile(Path(nvidia_driver.dirname, "driver.c").read_text(), "cuda_utils")

    def _cuda_utils_node_keyed(self) -> str:
        """Triton >= 3.7: compile ``cuda_utils`` as ``CudaUtils()`` does; the entry name is the builder's key."""
        from triton.backends.nvidia import driver as nvidia_driver
        from triton.runtime.build import compile_so_from_file

        if "cuda_utils" in self.built:
            return self.built["cuda_utils"]
        stub = os.environ.get("TRITON_LIBCUDA_PATH")
        libcuda = [stub] if stub else nvidia_driver.libcuda_dirs()
        try:
            path = compile_so_from_file(os.path.join(nvidia_driver.dirname, "driver.c"), "cuda_utils",
                                        library_dirs=[nvidia_driver.libdevice_dir, *libcuda],
                                        include_dirs=nvidia_driver.include_dirs, libraries=nvidia_driver.libraries)
        except (ImportError, RuntimeError, OSError) as err:
            if "undefined symbol" not in str(err) and "libcuda" not in str(err):
                raise
            path = None
        entry = Path(path).parent.name if path else ""
        self.built["cuda_utils"] = entry
        return entry

    def launcher(self, src: Any, metadata: dict) -> str | None:
        """The launcher ``CudaLauncher(src, metadata)`` would build on first launch (None: Triton >= 3.7 has none)."""
        if not per_kernel_launchers():
            return None
        from triton.backends.nvidia.driver import make_launcher

        constants = src.constants if hasattr(src, "constants") else {}
        arg_idx = lambda x: (src.fn.arg_names.index(x),) if isinstance(x, str) else x  # noqa: E731
        constants = {arg_idx(idx): value for idx, value in constants.items()}
        signature = dict(src.signature.items())
        return self._compile(make_launcher(constants, signature, metadata.get("tensordesc_meta")), "__triton_launcher")


def _driver_only(params: dict, device: str) -> None:
    """Op with no kernel: the build worker then builds ``cuda_utils`` alone (``worker.finish``)."""


# a bundle without Triton kernels still ships cuda_utils: the engine imports Triton and starts its driver
# (seen on the H200: vLLM's DeepGEMM path with a DeepGEMM-only bundle built cuda_utils with the node's C compiler)
OPS = {"cuda_utils": _driver_only}

